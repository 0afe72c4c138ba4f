//! The decision loop's own tests (the core's rules are tested in `src/decision/`).
use super::console_requests::credentials_free;
use super::*;

/// A guard cannot hand a visitor a resident's card, a blacklisted or listed plate, or the
/// code of another pass still running; an ended pass's card may be handed out again.
#[test]
fn a_local_pass_takes_no_credential_someone_else_holds() {
    use crate::decision::{PassRow, PlateKind, RegistryBuilder, ResidentStatus};
    let mut b = RegistryBuilder::with_capacity(1);
    b.insert("R1", "H1", ResidentStatus::Active, i64::MAX);
    b.insert_card("C-1", "R1");
    b.insert_plate("BAD", PlateKind::Blacklist, "", i64::MAX, false);
    b.insert_plate("AMB", PlateKind::AllowList, "", i64::MAX, true);
    b.insert_plate("OWN", PlateKind::Resident, "H1", i64::MAX, false);
    for (id, until, card) in [("P-run", 2_000, "C-2"), ("P-old", 500, "C-3")] {
        b.insert_pass(PassRow {
            id,
            host_household: "H1",
            valid_from_ms: 0,
            valid_until_ms: until,
            uses: 1,
            credentials: &[card.to_string()],
            plates: &[],
        });
    }
    let r = b.build(1);
    let pass = |code: &str, plate: Option<&str>| LocalPass {
        id: "L1".into(),
        code: code.into(),
        medium: "card".into(),
        host_household: "H1".into(),
        purpose: "x".into(),
        visitor_name: String::new(),
        plate: plate.map(Into::into),
        uses: 1,
        valid_from_ms: 1_000,
        valid_until_ms: 5_000,
        issued_by: "g".into(),
    };
    let now = 1_000;
    for (code, plate) in [
        ("C-1", None),
        ("C-2", None),
        ("C-9", Some("BAD")),
        ("C-9", Some("AMB")),
        ("C-9", Some("OWN")),
    ] {
        assert!(
            credentials_free(&r, &pass(code, plate), now).is_err(),
            "{code} {plate:?}"
        );
    }
    assert!(credentials_free(&r, &pass("C-3", Some("NEW")), now).is_ok());
    assert!(credentials_free(&r, &pass("0123456789", None), now).is_ok());
}

/// A device flooding the box cannot keep the fire panel or the guard waiting: with a
/// thousand device events queued, the fire reading and the guard's command are taken first,
/// then a closed join window, then device input one event a turn.
#[tokio::test]
async fn fire_and_the_guard_go_before_a_flood_of_device_input() {
    let (input_tx, input) = mpsc::channel(2048);
    let (control_tx, control) = mpsc::channel(8);
    let (source_tx, source_events) = mpsc::channel(8);
    let (_barrier_tx, barrier_reports) = mpsc::channel(8);
    let (_orders_tx, orders) = mpsc::channel(8);
    let (_stats_tx, stats_acked) = mpsc::channel(8);
    let (_swaps_tx, swaps) = mpsc::channel(8);
    let mut inbox = Inbox {
        input,
        control,
        source_events,
        barrier_reports,
        orders,
        stats_acked,
        swaps,
    };
    for _ in 0..1000 {
        let i = Input {
            device: 0,
            decoded: None,
            received: Instant::now(),
            redelivered: false,
            ack: Box::new(|| {}),
            reply: None,
        };
        input_tx.try_send(i).unwrap();
    }
    let (answer, _) = tokio::sync::oneshot::channel();
    control_tx.try_send(Control::FireReset(answer)).unwrap();
    let fire = SourceEvent::FireInput {
        device: 1,
        state: crate::decision::FireInput::Fire,
        detail: String::new(),
    };
    source_tx.try_send(fire).unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.tick().await;
    let mut turns = Vec::new();
    for due in [false, false, true, false, false] {
        // A join window that has closed is decided before the next device event too.
        let window = async move {
            if !due {
                std::future::pending::<()>().await
            }
        };
        turns.push(match inbox.next(window, &mut tick).await {
            Turn::Source(SourceEvent::FireInput { .. }) => "fire",
            Turn::Control(_) => "guard",
            Turn::Input(_) => "device",
            Turn::Tick => "window",
            _ => "other",
        });
    }
    assert_eq!(turns, ["fire", "guard", "window", "device", "device"]);
}
