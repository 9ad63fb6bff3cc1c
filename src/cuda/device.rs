//! Which GPU `--device` means, and errors that say in one line why none
//! can be used.

use super::kernels::driver_error;
use crate::engine::Device;
use anyhow::{bail, Result};
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, DriverError};

/// What `device` resolves to: `Some(ordinal)` for a GPU, `None` for the
/// CPU. `cuda` and `cuda:N` fail (one line) unless that GPU is usable;
/// `auto` picks GPU 0 when the driver reports one and the CPU otherwise.
pub fn resolve(device: Device) -> Result<Option<usize>> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda(n) => {
            let count = device_count()?;
            if n >= count {
                bail!(
                    "--device cuda:{n}: this machine has {count} CUDA GPU{} (cuda:0{})",
                    if count == 1 { "" } else { "s" },
                    if count > 1 {
                        format!(" to cuda:{}", count - 1)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(Some(n))
        }
        // A GPU that cannot even hold a context is as good as none.
        Device::Auto => Ok(match device_count() {
            Ok(c) if c > 0 && CudaContext::new(0).is_ok() => Some(0),
            _ => None,
        }),
    }
}

/// How many GPUs the driver reports; an error (one line) when the driver
/// reports none or cannot start.
pub fn device_count() -> Result<usize> {
    let n = CudaContext::device_count().map_err(|e| anyhow::anyhow!(explain(&e, None)))?;
    if n <= 0 {
        bail!("no CUDA GPU is usable: the NVIDIA driver reports none");
    }
    Ok(n as usize)
}

/// candle's CUDA device for GPU `ordinal`, or an error saying why not.
pub fn open(ordinal: usize) -> Result<candle_core::Device> {
    device_count()?;
    candle_core::Device::new_cuda_with_stream(ordinal).map_err(|e| match driver_error(&e) {
        Some(d) => anyhow::anyhow!(explain(d, Some(ordinal))),
        None => anyhow::anyhow!(
            "cannot use cuda:{ordinal}: {}",
            e.to_string().lines().next().unwrap_or_default()
        ),
    })
}

/// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", for the Configuration line.
pub fn describe(ordinal: usize) -> Result<String> {
    let ctx = CudaContext::new(ordinal).map_err(|e| anyhow::anyhow!(explain(&e, Some(ordinal))))?;
    let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
    let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
    let mem = ctx.total_mem().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    Ok(format!("{name} (sm_{major}{minor}, {mem:.1} GiB)"))
}

/// One line for a driver error, naming the likely cause.
pub(crate) fn explain(e: &DriverError, ordinal: Option<usize>) -> String {
    let what = match ordinal {
        Some(n) => format!("cuda:{n}"),
        None => "CUDA".to_string(),
    };
    match e.0 {
        CUresult::CUDA_ERROR_NO_DEVICE => {
            "no CUDA GPU is usable: the NVIDIA driver is installed but reports no device (CUDA_ERROR_NO_DEVICE)".to_string()
        }
        CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => format!(
            "{what}: the NVIDIA driver library and kernel module have different versions (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)"
        ),
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => format!(
            "{what}: the NVIDIA driver cannot load kernels built with CUDA {}: update the driver (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)",
            cuda_version()
        ),
        CUresult::CUDA_ERROR_INVALID_DEVICE => format!("{what}: no such GPU (CUDA_ERROR_INVALID_DEVICE)"),
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => format!("{what}: out of GPU memory (CUDA_ERROR_OUT_OF_MEMORY)"),
        code => format!("{what}: CUDA driver error {code:?}"),
    }
}

fn cuda_version() -> String {
    let mut v = 0i32;
    let built = super::ptx::CUDA_VERSION;
    // SAFETY: plain out-parameter call; fails harmlessly without a driver.
    let ok = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) } == CUresult::CUDA_SUCCESS;
    if ok && v > 0 {
        format!(
            "{built} (the driver supports {}.{})",
            v / 1000,
            (v % 1000) / 10
        )
    } else {
        built.to_string()
    }
}
