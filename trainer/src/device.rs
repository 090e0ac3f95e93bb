//! Device and thread selection.

use tch::Device;

use crate::config::DeviceKind;
use crate::error::{Result, TrainError};

/// Resolves `--device` to a libtorch device; `cuda` without a usable GPU is an error.
pub fn select(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Auto => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        DeviceKind::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(TrainError::Device(
                    "--device cuda was asked for but libtorch sees no CUDA GPU; use --device cpu or auto".into(),
                ))
            }
        }
    }
}

/// Sets libtorch's and rayon's thread counts (0 = all cores). Safe to call more than once.
pub fn set_threads(threads: usize) -> usize {
    let n = if threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        threads
    };
    tch::set_num_threads(n as i32);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    n
}

/// Human-readable device name for logs.
pub fn describe(d: Device) -> String {
    match d {
        Device::Cpu => format!("CPU ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("CUDA GPU {i}"),
        other => format!("{other:?}"),
    }
}
