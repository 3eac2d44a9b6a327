//! Records the per-exec supervisor sends the agent over its status pipe.
//!
//! Fixed 9-byte records (`tag`, two little-endian `i32`), each written with one
//! `write(2)` well under `PIPE_BUF`, so they never interleave or tear.

use codebox_sys::agent::ChildStatus;

pub const RECORD_LEN: usize = 9;

const TAG_STARTED: u8 = 1;
const TAG_EXITED: u8 = 2;
const TAG_SIGNALED: u8 = 3;
const TAG_SPAWN_FAILED: u8 = 4;

/// What a supervisor reports about its exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRecord {
    /// The user's program was exec'd (pid in the agent's PID namespace).
    Started { pid: i32 },
    /// The main process ended and the whole tree is dead.
    Finished(ChildStatus),
    /// The program could not be started: `step` of the child setup failed with `errno`.
    SpawnFailed { step: SetupStep, errno: i32 },
}

/// The steps between fork and exec of a user process, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SetupStep {
    Fork = 0,
    Session = 1,
    Capabilities = 2,
    Identity = 3,
    NoNewPrivileges = 4,
    WorkingDirectory = 5,
    Signals = 6,
    Execute = 7,
    OomScore = 8,
}

impl SetupStep {
    pub fn from_byte(byte: i32) -> Self {
        match byte {
            0 => Self::Fork,
            1 => Self::Session,
            2 => Self::Capabilities,
            3 => Self::Identity,
            4 => Self::NoNewPrivileges,
            5 => Self::WorkingDirectory,
            6 => Self::Signals,
            8 => Self::OomScore,
            _ => Self::Execute,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Fork => "creating the process",
            Self::Session => "creating a session",
            Self::Capabilities => "dropping capabilities",
            Self::Identity => "switching to the sandbox user",
            Self::NoNewPrivileges => "setting no_new_privs",
            Self::WorkingDirectory => "entering the working directory",
            Self::Signals => "resetting signals",
            Self::Execute => "executing the program",
            Self::OomScore => "raising the OOM score",
        }
    }
}

impl StatusRecord {
    pub fn encode(self) -> [u8; RECORD_LEN] {
        let (tag, a, b) = match self {
            Self::Started { pid } => (TAG_STARTED, pid, 0),
            Self::Finished(ChildStatus::Exited(code)) => (TAG_EXITED, code, 0),
            Self::Finished(ChildStatus::Signaled(signal)) => (TAG_SIGNALED, signal, 0),
            Self::SpawnFailed { step, errno } => (TAG_SPAWN_FAILED, step as i32, errno),
        };
        let mut record = [0; RECORD_LEN];
        record[0] = tag;
        record[1..5].copy_from_slice(&a.to_le_bytes());
        record[5..9].copy_from_slice(&b.to_le_bytes());
        record
    }

    pub fn decode(record: &[u8; RECORD_LEN]) -> Option<Self> {
        let a = i32::from_le_bytes(record[1..5].try_into().expect("4 bytes"));
        let b = i32::from_le_bytes(record[5..9].try_into().expect("4 bytes"));
        match record[0] {
            TAG_STARTED => Some(Self::Started { pid: a }),
            TAG_EXITED => Some(Self::Finished(ChildStatus::Exited(a))),
            TAG_SIGNALED => Some(Self::Finished(ChildStatus::Signaled(a))),
            TAG_SPAWN_FAILED => Some(Self::SpawnFailed {
                step: SetupStep::from_byte(a),
                errno: b,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            StatusRecord::Started { pid: 42 },
            StatusRecord::Finished(ChildStatus::Exited(3)),
            StatusRecord::Finished(ChildStatus::Signaled(9)),
            StatusRecord::SpawnFailed {
                step: SetupStep::WorkingDirectory,
                errno: libc::ENOENT,
            },
        ];
        for record in records {
            assert_eq!(StatusRecord::decode(&record.encode()), Some(record));
        }
        assert_eq!(StatusRecord::decode(&[0; RECORD_LEN]), None);
    }
}
