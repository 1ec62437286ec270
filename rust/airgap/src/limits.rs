//! Resource limits from the job's budget.
//!
//! Threats: a job that exhausts the appliance (memory, CPU, fork bombs, a disk filled
//! through the job directory) and so denies service to the broker and the edge itself.
//! Core dumps are switched off: a dump would write the job's memory, which holds
//! records, to disk.

use crate::options::Limits;
use crate::sys;

fn set(resource: i32, value: u64, name: &str) -> Result<(), String> {
    // CPU: the soft limit sends SIGXCPU (a death the job's record can name), the hard
    // limit one second later kills a job that ignores it.
    let max = if resource == sys::RLIMIT_CPU { value.saturating_add(1) } else { value };
    let limit = sys::Rlimit { cur: value, max };
    let ret = unsafe { sys::setrlimit(resource, &limit) };
    sys::check(ret as i64, &format!("rlimit {name}")).map(|_| ())
}

pub fn apply(limits: &Limits) -> Result<(), String> {
    set(sys::RLIMIT_CORE, 0, "core")?;
    set(sys::RLIMIT_NOFILE, limits.open_files, "open files")?;
    let optional = [
        (sys::RLIMIT_AS, limits.memory_bytes, "memory"),
        (sys::RLIMIT_CPU, limits.cpu_seconds, "cpu"),
        (sys::RLIMIT_NPROC, limits.processes, "processes"),
        (sys::RLIMIT_FSIZE, limits.file_bytes, "file size"),
    ];
    for (resource, value, name) in optional {
        if let Some(value) = value {
            set(resource, value, name)?;
        }
    }
    Ok(())
}
