//! `--device` and `--precision`, shared by every command that runs a model.

use clap::{Args, ValueEnum};
use glint::device::{DeviceChoice, OpenedDevice, Precision, open_device};

#[derive(Args, Clone, Copy)]
pub struct DeviceArgs {
    /// Where to run: `auto` (a GPU when wgpu finds one, else the CPU), `cpu` (Burn's flex
    /// backend) or `wgpu` (a GPU through Vulkan / Metal / DX12).
    #[arg(long, value_enum, default_value_t = DeviceFlag::Auto)]
    device: DeviceFlag,
    /// Floating-point precision: `f16` halves memory traffic on a GPU.
    #[arg(long, value_enum, default_value_t = PrecisionFlag::F32)]
    precision: PrecisionFlag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeviceFlag {
    /// A GPU when wgpu finds a real one, else the CPU.
    Auto,
    /// The CPU (Burn's flex backend).
    Cpu,
    /// A GPU through wgpu.
    Wgpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PrecisionFlag {
    F32,
    F16,
}

impl DeviceArgs {
    /// Opens the device (an absent GPU is an error here, not a panic later) and logs which.
    pub fn open(self) -> anyhow::Result<OpenedDevice> {
        let choice = match self.device {
            DeviceFlag::Auto => DeviceChoice::Auto,
            DeviceFlag::Cpu => DeviceChoice::Cpu,
            DeviceFlag::Wgpu => DeviceChoice::Wgpu,
        };
        let precision = match self.precision {
            PrecisionFlag::F32 => Precision::F32,
            PrecisionFlag::F16 => Precision::F16,
        };
        let opened = open_device(choice, precision)?;
        tracing::info!("device: {}, {:?}", opened.description, opened.precision);
        Ok(opened)
    }
}
