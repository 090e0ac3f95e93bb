//! Device and thread selection.

use tch::Device;

use crate::config::DeviceKind;
use crate::error::{Result, TrainError};

/// Loads libtorch's CUDA backend. The linker drops `libtorch_cuda.so` from the binary's
/// needed libraries (no symbol of it is referenced), and without it libtorch sees no GPU;
/// loading it registers the backend. Built only with the `cuda` feature.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
fn load_cuda_backend() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept for the
        // process lifetime (never dlclosed).
        let handle = unsafe { libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            tracing::warn!("libtorch_cuda.so could not be loaded: training will use the CPU");
        }
    });
}

#[cfg(not(feature = "cuda"))]
fn load_cuda_backend() {}

/// Resolves `--device` to a libtorch device; `cuda` without a usable GPU is an error.
pub fn select(kind: DeviceKind) -> Result<Device> {
    if kind != DeviceKind::Cpu {
        load_cuda_backend();
    }
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Auto => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        DeviceKind::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(TrainError::CudaUnavailable { built_with_cuda: cfg!(feature = "cuda") })
            }
        }
    }
}

/// Makes the CPU flush denormal floats to zero (FTZ and DAZ), as `torch.set_flush_denormal`.
///
/// STML's losses drive some optimizer moments and weights into denormal range, and x86
/// arithmetic on denormals is up to 100x slower: measured here, a MobileNetV2 step went
/// from 4 s to 16 s after the first update. Threads inherit the setting from the thread
/// that creates them, so this runs before libtorch starts its worker pool.
#[allow(unsafe_code, deprecated)]
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only sets the FTZ (bit 15) and DAZ (bit 6) flags of this thread's MXCSR.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// Keeps freed memory in the process for reuse instead of returning it to the kernel.
///
/// A training step allocates and frees the same few hundred activation buffers every
/// step, many above glibc's mmap threshold (at B 120 / 96 px the first layers' outputs are
/// 70 MB). By default each such buffer is a fresh `mmap`, and its first touch page-faults
/// (and zeroes) every page again, each step. With the mmap threshold raised to its 32 MiB maximum and
/// trimming off, and no buffer served by `mmap` at all (`M_MMAP_MAX` 0), buffers come
/// from the heap and are reused, as a caching allocator would: at B 120 / 96 px a CPU step
/// went from 5.1 s to 2.7 s, and page faults from 8.3 M to 1.3 M per 4 steps.
/// `STML_MALLOC_DEFAULT=1` keeps glibc's defaults and `STML_MALLOC_MMAP=1` keeps only its
/// `mmap` (for A/B measurements).
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("STML_MALLOC_DEFAULT").is_none() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes glibc allocator parameters; both values are in range.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's largest allowed value
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                if std::env::var_os("STML_MALLOC_MMAP").is_none() {
                    libc::mallopt(libc::M_MMAP_MAX, 0); // larger buffers too come from the heap
                }
            }
        });
    }
}

/// Sets libtorch's and rayon's thread counts (0 = all cores), flushes denormals to zero
/// (see [`flush_denormals`]) and keeps freed memory for reuse (see [`keep_freed_memory`]).
/// Safe to call more than once.
pub fn set_threads(threads: usize) -> usize {
    flush_denormals();
    keep_freed_memory();
    let n = if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
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
