//! How `ferricorn` ends: every exit code it returns, in one place (the
//! unit file's `RestartPreventExitStatus=`, the README's table and the
//! tests name these), and the start-up failures with the code of each.

use std::process::ExitCode;

/// How a `ferricorn` process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Stopped as asked, or `check-config` found the config valid.
    Success = 0,
    /// Something outside the config failed: sockets, the runtime, the
    /// executable, a worker's own start.
    Failure = 1,
    /// A bad command line (clap's code).
    Usage = 2,
    /// No worker could become ready at first start (the app fails to
    /// initialise). Distinct so that `RestartPreventExitStatus=` stops
    /// systemd from looping on it, as Gunicorn's exit 3 does not. A worker
    /// that cannot start exits with it too.
    BootFailure = 3,
    /// An invalid config (sysexits' `EX_CONFIG`; systemd shows "CONFIG").
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why `ferricorn serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Clients were waiting, so the start read the config again for this
    /// many seconds (the problem was said when the wait began).
    #[error("the configuration is still invalid after {0} s; giving up")]
    ConfigUnfixed(u64),
    #[error("cannot find own executable: {0}")]
    Executable(std::io::Error),
    /// The executable could not be read to compute its build id (the
    /// error names the file).
    #[error("{0}")]
    Build(std::io::Error),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("cannot start runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl StartError {
    /// The exit code it ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            StartError::Config(_) | StartError::ConfigUnfixed(_) => Exit::Config,
            _ => Exit::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let codes = [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::BootFailure,
            Exit::Config,
        ]
        .map(|e| e as u8);
        assert_eq!(codes, [0, 1, 2, 3, 78]);
    }
}
