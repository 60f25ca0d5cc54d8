//! Choosing where a detector runs: the CPU, a GPU through wgpu, or whichever is best here.

use std::sync::OnceLock;

use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::{Device, DeviceConfig, FloatDType};

/// Where to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU when wgpu finds a real one (not a software rasteriser such as lavapipe), else the CPU.
    #[default]
    Auto,
    /// The CPU, through Burn's `flex` backend.
    Cpu,
    /// The best GPU adapter wgpu finds (Vulkan, Metal or DX12), also a software one.
    Wgpu,
}

/// The floating-point type of weights and activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// 16-bit floats on the GPU: half the memory traffic. The CPU path is f32 only.
    F16,
}

/// The opened device and what it is, for logs and reports.
#[derive(Clone, Debug)]
pub struct OpenedDevice {
    pub device: Device,
    /// `cpu`, or `wgpu (ADAPTER NAME)`.
    pub description: String,
    pub precision: Precision,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("wgpu: no usable GPU adapter: {0}")]
    NoAdapter(String),
    #[error("f16 precision needs a GPU (the CPU path computes in f32)")]
    HalfOnCpu,
    #[error("cannot set the GPU to {precision:?}: {reason}")]
    Precision { precision: Precision, reason: String },
}

/// Opens the device `choice` names, set to compute in `precision`.
///
/// wgpu is set up once per process and shared by every call, and so is its precision: the first
/// call that opens the GPU sets it, and asking for the other one later is an error.
pub fn open_device(choice: DeviceChoice, precision: Precision) -> Result<OpenedDevice, DeviceError> {
    let mut device = match choice {
        DeviceChoice::Cpu => Device::flex(),
        DeviceChoice::Wgpu => wgpu_device().map_err(DeviceError::NoAdapter)?,
        DeviceChoice::Auto => match wgpu_device() {
            // A software adapter has no card behind it, and is far slower than the CPU path.
            Ok(device) if device.identity().is_some_and(|id| id.physical.is_some()) => device,
            _ => Device::flex(),
        },
    };
    let description = if device == Device::flex() {
        if precision == Precision::F16 {
            return Err(DeviceError::HalfOnCpu);
        }
        "cpu".to_string()
    } else {
        set_gpu_precision(&mut device, precision)?;
        format!("wgpu ({})", adapter_name(&device))
    };
    Ok(OpenedDevice { device, description, precision })
}

/// Burn fixes a device's default float type at its first tensor, so it is set once.
fn set_gpu_precision(device: &mut Device, precision: Precision) -> Result<(), DeviceError> {
    static SET: OnceLock<Result<Precision, String>> = OnceLock::new();
    let set = SET.get_or_init(|| {
        let dtype = match precision {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
        };
        device
            .configure(DeviceConfig::default().float_dtype(dtype))
            .map(|()| precision)
            .map_err(|e| e.to_string())
    });
    match set {
        Ok(set) if *set == precision => Ok(()),
        Ok(set) => Err(DeviceError::Precision {
            precision,
            reason: format!("this process already runs the GPU in {set:?}"),
        }),
        Err(reason) => Err(DeviceError::Precision { precision, reason: reason.clone() }),
    }
}

/// The process's wgpu device. On Linux only Vulkan is asked (OpenGL's compute is no faster than
/// the CPU path, and probing it through EGL prints errors on machines without a display).
fn wgpu_device() -> Result<Device, String> {
    static WGPU: OnceLock<Result<Device, String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        let options = Device::wgpu_options();
        let options =
            if cfg!(target_os = "linux") { options.graphics_api(WgpuBackend::Vulkan) } else { options };
        options.init().map_err(|e| e.to_string())
    })
    .clone()
}

fn adapter_name(device: &Device) -> String {
    device.identity().map_or_else(|| "unknown adapter".to_string(), |id| id.name)
}
