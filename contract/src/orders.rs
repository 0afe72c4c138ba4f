//! Signed orders from above (`SignedCommand` on the wire): who may send what, and the checks every
//! one passes before it is applied (docs/ARCHITECTURE.md, "Contracts"). Pure: keys, this
//! gateway's place in the tree, the time and the store's age are given; the replay check against
//! the ids already applied is the caller's (it owns them).
//!
//! Refused, each with its reason in the `cmd/result`: `malformed`, `unknown_key`,
//! `bad_signature`, `clock_unsynced` (anything but a mode change or a ping while the gateway's
//! clock is not known to be right), `expired` (past its expiry, or issued longer ago than the maximum lifetime),
//! `lifetime_too_long` (valid for longer than `max_lifetime_s`), `not_yet_valid` (issued further
//! in the future than the allowed clock skew), `issued_before_store` (issued before this
//! gateway's store existed: after a lost store its replay ids are gone too), `replayed` (an id
//! already applied; ids are kept until the order expires, across restarts), `out_of_scope` (the
//! target is not this gateway — addressed by its full path `{community}/{gateway}` — or a level
//! above it that it belongs to), `not_permitted` (the key may not address that level or send that
//! kind; `fire` is a kind of its own).
use crate::proto::v1;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use prost::Message;
use serde::Deserialize;

/// What a gateway takes in one chunked snapshot transfer (it refuses more; the company's tool
/// refuses to make more).
pub const MAX_CHUNKS: u32 = 1024;
pub const MAX_TRANSFER_BYTES: usize = 64 << 20;

/// What an order does, for key permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `normal`, `epidemic`, `lockdown`.
    SetMode,
    /// `set_mode fire`: every gate opened and held until a local reset at each box. A permission
    /// of its own, held by few (the company's emergency key), never implied by `set_mode`.
    Fire,
    RemoteOpen,
    Ping,
    /// Replace or change the lists (residents, households, plates, passes).
    Registry,
    SetThreshold,
    /// An alarm acknowledged on the company's pages (`ack_alarm`): closes it on the gate's console.
    AckAlarm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Gateway,
    Community,
    Street,
    District,
}

impl Level {
    fn of(l: v1::Level) -> Option<Level> {
        match l {
            v1::Level::Gateway => Some(Level::Gateway),
            v1::Level::Community => Some(Level::Community),
            v1::Level::Street => Some(Level::Street),
            v1::Level::District => Some(Level::District),
            v1::Level::Unspecified => None,
        }
    }
}

/// A trusted public key and what it may do.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: String,
    pub key: VerifyingKey,
    pub levels: Vec<Level>,
    pub kinds: Vec<Kind>,
}

/// This gateway's codes in the tree.
#[derive(Debug, Clone)]
pub struct Place {
    pub gateway: String,
    pub community: String,
    pub street: String,
    pub district: String,
}

impl Place {
    /// How an order addresses this one gateway: gateway ids are unique only within their
    /// community, so the community's code (which holds the street's, district's and city's) goes
    /// with it.
    pub fn gateway_path(&self) -> String {
        format!("{}/{}", self.community, self.gateway)
    }
}

/// When the store this gateway keeps its replay ids in was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAge {
    /// Created at this time (unix ms), read from a clock known to be synced: an order issued
    /// before it cannot have been applied here, and is refused.
    Since(i64),
    /// Created while the clock was not known to be right: orders that a replay could abuse
    /// (remote open, fire, list sync, thresholds) are refused until the time is known; a mode
    /// change is not.
    Unknown,
}

/// The limits every order is held to (from `[commands]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far ahead of this gateway's clock an order may be issued.
    pub max_skew_ms: i64,
    /// How long an order may be valid, and how long ago it may have been issued.
    pub max_lifetime_ms: i64,
    pub store: StoreAge,
    /// The gateway's clock is known to be right: an order's validity can be checked.
    pub clock_trusted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The command id, when the command could be read that far.
    pub id: String,
    pub reason: &'static str,
    pub detail: String,
}

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub command: v1::Command,
    pub kind: Kind,
    /// The key that signed it (a chunked snapshot's chunks must all come from one key).
    pub key_id: String,
}

/// Checks one `SignedCommand`: everything but replay, which the caller checks against the ids it
/// holds ([`Verified::replayed`]).
pub fn verify(
    bytes: &[u8],
    keys: &[TrustedKey],
    place: &Place,
    now_ms: i64,
    limits: &Limits,
) -> Result<Verified, Refused> {
    let refuse = |id: &str, reason, detail: String| Refused {
        id: id.to_string(),
        reason,
        detail,
    };
    let signed = v1::SignedCommand::decode(bytes)
        .map_err(|e| refuse("", "malformed", format!("not a SignedCommand: {e}")))?;
    let key = keys.iter().find(|k| k.id == signed.key_id).ok_or_else(|| {
        refuse(
            "",
            "unknown_key",
            format!("key {:?} is not trusted here", signed.key_id),
        )
    })?;
    let sig = Signature::from_slice(&signed.signature).map_err(|_| {
        refuse(
            "",
            "bad_signature",
            "not a 64-byte Ed25519 signature".into(),
        )
    })?;
    key.key.verify(&signed.command, &sig).map_err(|_| {
        refuse(
            "",
            "bad_signature",
            format!("does not verify with key {:?}", key.id),
        )
    })?;
    // Only now is the content trusted enough to read.
    let c = v1::Command::decode(signed.command.as_slice())
        .map_err(|e| refuse("", "malformed", format!("not a Command: {e}")))?;
    let id = c.id.as_str();
    if id.is_empty() || id.len() > 128 {
        return Err(refuse(id, "malformed", "the id must be 1–128 bytes".into()));
    }
    let kind = match &c.payload {
        Some(v1::command::Payload::SetMode(m)) if m.mode == "fire" => Kind::Fire,
        Some(v1::command::Payload::SetMode(_)) => Kind::SetMode,
        Some(v1::command::Payload::RemoteOpen(_)) => Kind::RemoteOpen,
        Some(v1::command::Payload::Ping(_)) => Kind::Ping,
        Some(
            v1::command::Payload::RegistrySnapshot(_)
            | v1::command::Payload::RegistryDelta(_)
            | v1::command::Payload::SnapshotChunk(_),
        ) => Kind::Registry,
        Some(v1::command::Payload::SetThreshold(_)) => Kind::SetThreshold,
        Some(v1::command::Payload::AckAlarm(_)) => Kind::AckAlarm,
        None => return Err(refuse(id, "malformed", "no payload".into())),
    };
    // A remote open's validity read on a clock that may be decades off proves nothing.
    if !limits.clock_trusted && !matches!(kind, Kind::SetMode | Kind::Ping) {
        return Err(refuse(
            id,
            "clock_unsynced",
            "this gateway's clock is not known to be right (not synced since boot): until it is \
             only a mode change (not fire) is taken, and only one valid by the clock as it reads"
                .into(),
        ));
    }
    if now_ms > c.expires_at_ms {
        return Err(refuse(
            id,
            "expired",
            format!("expired at {}", c.expires_at_ms),
        ));
    }
    let lifetime = c.expires_at_ms.saturating_sub(c.issued_at_ms);
    if lifetime > limits.max_lifetime_ms {
        return Err(refuse(
            id,
            "lifetime_too_long",
            format!(
                "valid for {} s; at most {} s (commands.max_lifetime_s)",
                lifetime / 1000,
                limits.max_lifetime_ms / 1000
            ),
        ));
    }
    // With the lifetime bounded, an order issued longer ago than that has expired too, and the
    // ids kept for replay are bounded by construction.
    if c.issued_at_ms > now_ms.saturating_add(limits.max_skew_ms) {
        return Err(refuse(
            id,
            "not_yet_valid",
            format!(
                "issued {} ms ahead of this gateway's clock",
                c.issued_at_ms - now_ms
            ),
        ));
    }
    match limits.store {
        StoreAge::Since(created) if c.issued_at_ms < created => {
            return Err(refuse(
                id,
                "issued_before_store",
                format!(
                    "issued at {}, before {created}: this gateway's store was made then (after a lost store, that and the allowed clock skew), so it may have been applied to the lost one; send it anew, issued after that",
                    c.issued_at_ms
                ),
            ));
        }
        StoreAge::Unknown if !matches!(kind, Kind::SetMode | Kind::Ping) => {
            return Err(refuse(
                id,
                "issued_before_store",
                "this gateway's store was created while its clock was not synced: until the time \
                 is known only a mode change (not fire) is taken"
                    .into(),
            ));
        }
        _ => {}
    }
    let target = c.target.clone().unwrap_or_default();
    let level = Level::of(target.level())
        .ok_or_else(|| refuse(id, "malformed", "no target level".into()))?;
    let ours = match level {
        Level::Gateway => place.gateway_path(),
        Level::Community => place.community.clone(),
        Level::Street => place.street.clone(),
        Level::District => place.district.clone(),
    };
    if target.code != ours {
        let hint = if level == Level::Gateway && target.code == place.gateway {
            " (a gateway is addressed by its full path, community/gateway)"
        } else {
            ""
        };
        return Err(refuse(
            id,
            "out_of_scope",
            format!(
                "for {level:?} {:?}; this gateway is {ours:?}{hint}",
                target.code
            ),
        ));
    }
    if !key.levels.contains(&level) || !key.kinds.contains(&kind) {
        return Err(refuse(
            id,
            "not_permitted",
            format!("key {:?} may not send {kind:?} to a {level:?}", key.id),
        ));
    }
    Ok(Verified {
        command: c,
        kind,
        key_id: signed.key_id,
    })
}

impl Verified {
    /// The replay check, given whether this id was applied before.
    pub fn replayed(&self, applied: impl Fn(&str) -> bool) -> Option<Refused> {
        applied(&self.command.id).then(|| Refused {
            id: self.command.id.clone(),
            reason: "replayed",
            detail: "this id was applied before".into(),
        })
    }
}

/// Signs a command: the company's tools and the tests (feature `sign`). A gateway only checks,
/// so the box's binary carries no signing code.
#[cfg(any(test, feature = "sign"))]
pub fn sign(c: &v1::Command, key_id: &str, key: &ed25519_dalek::SigningKey) -> v1::SignedCommand {
    use ed25519_dalek::Signer;
    let command = c.encode_to_vec();
    let signature = key.sign(&command).to_bytes().to_vec();
    v1::SignedCommand {
        command,
        key_id: key_id.to_string(),
        signature,
    }
}

/// A key from 64 hex digits.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, String> {
    let bytes = crate::hex::parse_hex(hex)?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: i64 = 1_800_000_000_000;

    fn place() -> Place {
        Place {
            gateway: "gw-1".into(),
            community: "330106001001".into(),
            street: "330106001".into(),
            district: "330106".into(),
        }
    }

    fn keys() -> (SigningKey, SigningKey, Vec<TrustedKey>) {
        let company = SigningKey::from_bytes(&[7; 32]);
        let street = SigningKey::from_bytes(&[9; 32]);
        let trusted = vec![
            TrustedKey {
                id: "company".into(),
                key: company.verifying_key(),
                levels: vec![
                    Level::Gateway,
                    Level::Community,
                    Level::Street,
                    Level::District,
                ],
                kinds: vec![Kind::SetMode, Kind::RemoteOpen, Kind::Ping],
            },
            TrustedKey {
                id: "street-office".into(),
                key: street.verifying_key(),
                levels: vec![Level::Street],
                kinds: vec![Kind::SetMode],
            },
        ];
        (company, street, trusted)
    }

    fn command(
        id: &str,
        level: v1::Level,
        code: &str,
        payload: v1::command::Payload,
    ) -> v1::Command {
        v1::Command {
            id: id.into(),
            issued_at_ms: NOW - 1000,
            expires_at_ms: NOW + 60_000,
            target: Some(v1::Scope {
                level: level as i32,
                code: code.into(),
            }),
            payload: Some(payload),
        }
    }

    fn mode(m: &str) -> v1::command::Payload {
        v1::command::Payload::SetMode(v1::SetMode { mode: m.into() })
    }

    fn open() -> v1::command::Payload {
        v1::command::Payload::RemoteOpen(v1::RemoteOpen {
            lane: "east-1".into(),
            operator_id: "op-7".into(),
            reason: "ambulance".into(),
        })
    }

    const LIMITS: Limits = Limits {
        max_skew_ms: 30_000,
        max_lifetime_ms: 24 * 3600 * 1000,
        store: StoreAge::Since(NOW - 3600 * 1000),
        clock_trusted: true,
    };

    fn check_with(
        signed: &v1::SignedCommand,
        trusted: &[TrustedKey],
        limits: &Limits,
    ) -> Result<Kind, &'static str> {
        let v = verify(&signed.encode_to_vec(), trusted, &place(), NOW, limits)
            .map_err(|r| r.reason)?;
        match v.replayed(|id| id == "used") {
            Some(r) => Err(r.reason),
            None => Ok(v.kind),
        }
    }

    fn check(signed: &v1::SignedCommand, trusted: &[TrustedKey]) -> Result<Kind, &'static str> {
        check_with(signed, trusted, &LIMITS)
    }

    proptest::proptest! {
        // Ed25519 in a debug build is slow: fewer cases here, the fuzz target does the volume.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        // The plain-test side of `fuzz/fuzz_targets/commands.rs`: arbitrary bytes, and arbitrary
        // bytes signed by a trusted key, never panic and never pass unless well-formed.
        #[test]
        fn arbitrary_command_bytes_are_refused_cleanly(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let (company, _, trusted) = keys();
            let _ = verify(&data, &trusted, &place(), NOW, &LIMITS);
            let signed = v1::SignedCommand {
                signature: {
                    use ed25519_dalek::Signer;
                    company.sign(&data).to_bytes().to_vec()
                },
                command: data,
                key_id: "company".into(),
            };
            let r = verify(&signed.encode_to_vec(), &trusted, &place(), NOW, &LIMITS);
            if let Ok(v) = r {
                proptest::prop_assert!(!v.command.id.is_empty());
            }
        }
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let (company, street, trusted) = keys();
        let ok = command("c1", v1::Level::Street, "330106001", mode("lockdown"));
        assert_eq!(
            check(&sign(&ok, "street-office", &street), &trusted),
            Ok(Kind::SetMode)
        );
        // Signed by another key than it claims.
        assert_eq!(
            check(&sign(&ok, "company", &street), &trusted),
            Err("bad_signature")
        );
        // Tampered after signing.
        let mut t = sign(&ok, "street-office", &street);
        t.command[3] ^= 1;
        assert_eq!(check(&t, &trusted), Err("bad_signature"));
        assert_eq!(
            check(&sign(&ok, "nobody", &street), &trusted),
            Err("unknown_key")
        );
        let mut late = ok.clone();
        late.expires_at_ms = NOW - 1;
        assert_eq!(
            check(&sign(&late, "street-office", &street), &trusted),
            Err("expired")
        );
        let mut early = ok.clone();
        early.issued_at_ms = NOW + 31_000;
        assert_eq!(
            check(&sign(&early, "street-office", &street), &trusted),
            Err("not_yet_valid")
        );
        let mut used = ok.clone();
        used.id = "used".into();
        assert_eq!(
            check(&sign(&used, "street-office", &street), &trusted),
            Err("replayed")
        );
        let other_street = command("c2", v1::Level::Street, "330106002", mode("lockdown"));
        assert_eq!(
            check(&sign(&other_street, "company", &company), &trusted),
            Err("out_of_scope")
        );
        // A street office may not open a gate, nor address the district.
        let open_cmd = command("c3", v1::Level::Gateway, "330106001001/gw-1", open());
        assert_eq!(
            check(&sign(&open_cmd, "street-office", &street), &trusted),
            Err("not_permitted")
        );
        assert_eq!(
            check(&sign(&open_cmd, "company", &company), &trusted),
            Ok(Kind::RemoteOpen)
        );
        let district = command("c4", v1::Level::District, "330106", mode("normal"));
        assert_eq!(
            check(&sign(&district, "street-office", &street), &trusted),
            Err("not_permitted")
        );
        assert_eq!(
            verify(b"\xff\xff garbage", &trusted, &place(), NOW, &LIMITS).map_err(|r| r.reason),
            Err("malformed")
        );
    }

    #[test]
    fn fire_is_a_permission_of_its_own() {
        let (company, street, mut trusted) = keys();
        let fire = command("f1", v1::Level::Street, "330106001", mode("fire"));
        // set_mode does not imply fire, for the street office or the company.
        assert_eq!(
            check(&sign(&fire, "street-office", &street), &trusted),
            Err("not_permitted")
        );
        assert_eq!(
            check(&sign(&fire, "company", &company), &trusted),
            Err("not_permitted")
        );
        trusted[0].kinds.push(Kind::Fire);
        assert_eq!(
            check(&sign(&fire, "company", &company), &trusted),
            Ok(Kind::Fire)
        );
        // Fire does not imply the other modes either.
        trusted[1].kinds = vec![Kind::Fire];
        let lockdown = command("f2", v1::Level::Street, "330106001", mode("lockdown"));
        assert_eq!(
            check(&sign(&lockdown, "street-office", &street), &trusted),
            Err("not_permitted")
        );
    }

    #[test]
    fn a_gateway_is_addressed_by_its_full_path_only() {
        let (company, _, trusted) = keys();
        let bare = command("g1", v1::Level::Gateway, "gw-1", open());
        let r = verify(
            &sign(&bare, "company", &company).encode_to_vec(),
            &trusted,
            &place(),
            NOW,
            &LIMITS,
        )
        .unwrap_err();
        assert_eq!(r.reason, "out_of_scope");
        assert!(r.detail.contains("full path"), "{}", r.detail);
        // The same gateway id in another community is another gateway.
        let elsewhere = command("g2", v1::Level::Gateway, "330106001002/gw-1", open());
        assert_eq!(
            check(&sign(&elsewhere, "company", &company), &trusted),
            Err("out_of_scope")
        );
        let ours = command("g3", v1::Level::Gateway, "330106001001/gw-1", open());
        assert_eq!(
            check(&sign(&ours, "company", &company), &trusted),
            Ok(Kind::RemoteOpen)
        );
    }

    #[test]
    fn an_order_lives_at_most_the_maximum_lifetime() {
        let (company, _, trusted) = keys();
        let mut century = command("l1", v1::Level::Street, "330106001", mode("lockdown"));
        century.expires_at_ms = NOW + 100 * 365 * 24 * 3600 * 1000;
        assert_eq!(
            check(&sign(&century, "company", &company), &trusted),
            Err("lifetime_too_long")
        );
        let mut forever = century.clone();
        forever.expires_at_ms = i64::MAX;
        assert_eq!(
            check(&sign(&forever, "company", &company), &trusted),
            Err("lifetime_too_long")
        );
        let mut old = century.clone();
        old.issued_at_ms = 978_307_200_000; // 2001
        old.expires_at_ms = 4_102_444_800_000; // 2100
        assert_eq!(
            check(&sign(&old, "company", &company), &trusted),
            Err("lifetime_too_long")
        );
        let mut day = century;
        day.expires_at_ms = day.issued_at_ms + 24 * 3600 * 1000;
        assert_eq!(
            check(&sign(&day, "company", &company), &trusted),
            Ok(Kind::SetMode)
        );
    }

    #[test]
    fn orders_from_before_the_store_are_refused_and_an_unknown_age_holds_only_the_abusable() {
        let (company, _, trusted) = keys();
        let rebuilt = Limits {
            store: StoreAge::Since(NOW - 500),
            ..LIMITS
        };
        let open_cmd = command("s1", v1::Level::Gateway, "330106001001/gw-1", open());
        assert_eq!(
            check_with(&sign(&open_cmd, "company", &company), &trusted, &rebuilt),
            Err("issued_before_store")
        );
        let mut fresh = open_cmd.clone();
        fresh.issued_at_ms = NOW - 100;
        assert_eq!(
            check_with(&sign(&fresh, "company", &company), &trusted, &rebuilt),
            Ok(Kind::RemoteOpen)
        );
        let unknown = Limits {
            store: StoreAge::Unknown,
            ..LIMITS
        };
        assert_eq!(
            check_with(&sign(&fresh, "company", &company), &trusted, &unknown),
            Err("issued_before_store")
        );
        let unsynced = Limits {
            clock_trusted: false,
            ..LIMITS
        };
        assert_eq!(
            check_with(&sign(&fresh, "company", &company), &trusted, &unsynced),
            Err("clock_unsynced")
        );
        // Whatever the clock makes of its validity (here: expired), the reason is the clock.
        let mut old_open = fresh.clone();
        old_open.expires_at_ms = NOW - 1;
        assert_eq!(
            check_with(&sign(&old_open, "company", &company), &trusted, &unsynced),
            Err("clock_unsynced")
        );
        let lockdown = command("s2", v1::Level::Street, "330106001", mode("lockdown"));
        assert_eq!(
            check_with(&sign(&lockdown, "company", &company), &trusted, &unsynced),
            Ok(Kind::SetMode)
        );
        assert_eq!(
            check_with(&sign(&lockdown, "company", &company), &trusted, &unknown),
            Ok(Kind::SetMode)
        );
        let mut trusted = trusted;
        trusted[0].kinds.extend([Kind::Fire, Kind::Registry]);
        for (id, payload) in [
            ("s3", mode("fire")),
            (
                "s4",
                v1::command::Payload::SetThreshold(v1::SetThreshold {
                    fever_threshold_c: 38.0,
                    lane: String::new(),
                }),
            ),
        ] {
            let c = command(id, v1::Level::Street, "330106001", payload);
            assert_eq!(
                check_with(&sign(&c, "company", &company), &trusted, &unknown),
                Err("issued_before_store"),
                "{id}"
            );
        }
    }
}
