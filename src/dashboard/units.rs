//! Unit states from systemd, asked over the system bus with sd-bus
//! (libsystemd, already linked for the journal) rather than by running
//! `systemctl show`: a process per page was most of a cold start's work.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;

use libsystemd_sys::bus::{
    sd_bus, sd_bus_error, sd_bus_error_free, sd_bus_flush_close_unref, sd_bus_get_property_string,
    sd_bus_get_property_trivial, sd_bus_open_system, sd_bus_path_encode,
};

const DEST: &CStr = c"org.freedesktop.systemd1";
const UNIT_PREFIX: &CStr = c"/org/freedesktop/systemd1/unit";
const UNIT: &CStr = c"org.freedesktop.systemd1.Unit";
const SERVICE: &CStr = c"org.freedesktop.systemd1.Service";
const TIMER: &CStr = c"org.freedesktop.systemd1.Timer";

/// What the dashboard shows of one unit. Fields systemd did not give are
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub load: Option<String>,
    pub active: Option<String>,
    pub sub: Option<String>,
    pub unit_file: Option<String>,
    /// The service's (or timer's) `Result`.
    pub result: Option<String>,
    pub restarts: Option<u32>,
    /// Timers: realtime, µs since the epoch (0 = never / not scheduled).
    pub last_trigger_us: Option<u64>,
    pub next_elapse_us: Option<u64>,
}

/// A connection to the system bus, closed on drop.
struct Bus(*mut sd_bus);

impl Drop for Bus {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sd_bus_open_system and is released once.
        unsafe { sd_bus_flush_close_unref(self.0) };
    }
}

/// An sd_bus_error, freed on drop.
struct BusError(sd_bus_error);

impl BusError {
    fn new() -> Self {
        BusError(sd_bus_error {
            name: ptr::null(),
            message: ptr::null(),
            need_free: 0,
        })
    }
}

impl Drop for BusError {
    fn drop(&mut self) {
        // SAFETY: initialised empty above; sd-bus set it or left it empty.
        unsafe { sd_bus_error_free(&mut self.0) };
    }
}

impl Bus {
    fn open() -> Option<Bus> {
        let mut bus = ptr::null_mut();
        // SAFETY: `bus` is a valid out-pointer.
        let r = unsafe { sd_bus_open_system(&mut bus) };
        (r >= 0 && !bus.is_null()).then_some(Bus(bus))
    }

    fn string(&self, path: &CStr, iface: &CStr, member: &CStr) -> Option<String> {
        let mut err = BusError::new();
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: valid bus and C strings; `out` is set to a malloc'd
        // string on success, which is freed below.
        let r = unsafe {
            sd_bus_get_property_string(
                self.0,
                DEST.as_ptr(),
                path.as_ptr(),
                iface.as_ptr(),
                member.as_ptr(),
                &mut err.0,
                &mut out,
            )
        };
        if r < 0 || out.is_null() {
            return None;
        }
        // SAFETY: sd-bus returned a NUL-terminated string we now own.
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated with malloc by sd-bus.
        unsafe { libc::free(out.cast()) };
        Some(s)
    }

    /// A property of D-Bus type `t` (u64) or `u` (u32), by `kind`.
    fn trivial<T: Default>(&self, path: &CStr, iface: &CStr, member: &CStr, kind: u8) -> Option<T> {
        let mut err = BusError::new();
        let mut out = T::default();
        // SAFETY: `out` has the size of the D-Bus type named by `kind`
        // (callers pair b't' with u64 and b'u' with u32).
        let r = unsafe {
            sd_bus_get_property_trivial(
                self.0,
                DEST.as_ptr(),
                path.as_ptr(),
                iface.as_ptr(),
                member.as_ptr(),
                &mut err.0,
                kind as c_char,
                (&mut out as *mut T).cast::<c_void>(),
            )
        };
        (r >= 0).then_some(out)
    }
}

/// The unit's object path (systemd loads the unit on demand when it is
/// asked by path, so an unknown unit reads as `not-found`).
fn unit_path(unit: &str) -> Option<CString> {
    let name = CString::new(unit).ok()?;
    let mut out: *mut c_char = ptr::null_mut();
    // SAFETY: valid C strings; `out` is a malloc'd string on success.
    let r = unsafe { sd_bus_path_encode(UNIT_PREFIX.as_ptr(), name.as_ptr(), &mut out) };
    if r < 0 || out.is_null() {
        return None;
    }
    // SAFETY: as in `Bus::string`.
    let path = unsafe { CStr::from_ptr(out) }.to_owned();
    // SAFETY: allocated with malloc by sd-bus.
    unsafe { libc::free(out.cast()) };
    Some(path)
}

/// Each unit's properties by name; empty when the system bus cannot be
/// reached (no systemd, no D-Bus).
pub fn states(units: &[&str]) -> HashMap<String, Props> {
    let mut out = HashMap::new();
    if units.is_empty() {
        return out;
    }
    let Some(bus) = Bus::open() else {
        return out;
    };
    for unit in units {
        let Some(path) = unit_path(unit) else {
            continue;
        };
        let Some(load) = bus.string(&path, UNIT, c"LoadState") else {
            continue;
        };
        let mut p = Props {
            active: bus.string(&path, UNIT, c"ActiveState"),
            sub: bus.string(&path, UNIT, c"SubState"),
            ..Props::default()
        };
        let loaded = load == "loaded";
        p.load = Some(load);
        if unit.ends_with(".service") && loaded {
            p.result = bus.string(&path, SERVICE, c"Result");
            p.restarts = bus.trivial::<u32>(&path, SERVICE, c"NRestarts", b'u');
        } else if unit.ends_with(".timer") && loaded {
            p.unit_file = bus.string(&path, UNIT, c"UnitFileState");
            p.result = bus.string(&path, TIMER, c"Result");
            p.last_trigger_us = bus.trivial::<u64>(&path, TIMER, c"LastTriggerUSec", b't');
            p.next_elapse_us = bus.trivial::<u64>(&path, TIMER, c"NextElapseUSecRealtime", b't');
        }
        out.insert(unit.to_string(), p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_become_escaped_object_paths() {
        assert_eq!(
            unit_path("pimainteno.timer").unwrap().to_str().unwrap(),
            "/org/freedesktop/systemd1/unit/pimainteno_2etimer"
        );
        assert_eq!(
            unit_path("pm-onfailure@a\\x2db.service")
                .unwrap()
                .to_str()
                .unwrap(),
            "/org/freedesktop/systemd1/unit/pm_2donfailure_40a_5cx2db_2eservice"
        );
    }
}
