//! What a start reads before anything runs: the store (moved aside if damaged), the lists the
//! config names (imported when changed), the registry and the durable state. What went wrong is
//! told upstream as the first records.
use super::records;
use crate::config::Config;
use crate::decision::Registry;
use crate::proto::v1;
use crate::store::outbox::Record;
use crate::store::{Imported, List, Store, StoreError};
use tracing::{error, info};

pub struct Boot {
    pub store: Store,
    pub registry: Registry,
    /// The durable state: every part takes the keys it owns.
    pub state: Vec<(String, Vec<u8>)>,
    /// Alarms about the start itself, to be written first.
    pub alarms: Vec<Record>,
}

pub fn boot(config: &Config) -> Result<Boot, StoreError> {
    let (store, moved_aside) = Store::open_or_recover(&config.store.dir)?;
    let mut alarms = Vec::new();
    let now = crate::now_ms();
    if let Some(m) = moved_aside {
        alarms.push(records::gateway_alarm(
            v1::AlarmKind::StorageLoss,
            format!(
                "store was damaged ({}); moved to {}; records not yet sent upstream are lost",
                m.error,
                m.to.display()
            ),
            now,
        ));
    }
    let r = &config.registry;
    for (list, file) in [
        (None, &r.import),
        (Some(List::Passes), &r.passes),
        (Some(List::Plates), &r.plates),
        (Some(List::Households), &r.households),
    ] {
        let Some(file) = file else { continue };
        let name = list.map_or("residents", List::name);
        let imported = match list {
            None => store.import_residents(file, r.max_residents),
            Some(list) => store.import_list(list, file),
        };
        match imported {
            Ok(Imported::Replaced { residents: rows }) => {
                info!(file = %file.display(), rows, "{name} list imported.")
            }
            Ok(Imported::Unchanged) => {}
            Err(e) => {
                error!(error = %e, "{name} list refused; keeping the stored list.");
                alarms.push(records::gateway_alarm(
                    v1::AlarmKind::RegistryRefused,
                    format!("{name} list refused, the stored list is kept: {e}"),
                    now,
                ));
            }
        }
    }
    let (registry, problems) = store.load_registry_checked()?;
    for p in problems {
        // The gate runs with what could be read; the company must know the rest is missing.
        error!(problem = %p, "Stored list unreadable.");
        alarms.push(records::gateway_alarm(v1::AlarmKind::StorageLoss, p, now));
    }
    info!(
        residents = registry.len(),
        visitor_passes = registry.passes(),
        "Registry loaded."
    );
    let state = store.load_state()?;
    // Importing and loading a large list churns the heap; hand the freed pages back so the
    // box's memory reflects what is actually held.
    release_free_memory();
    Ok(Boot {
        store,
        registry,
        state,
        alarms,
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel; it takes no
    // pointers of ours and is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn release_free_memory() {}
