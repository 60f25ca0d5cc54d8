//! ResNet backbone parity with torchvision's `ResNet` (`BasicBlock` and `Bottleneck`, every width
//! divided by 4), loaded from torchvision-named state dicts (fixtures:
//! tests/fixtures/make_resnet.py; see tests/fixtures/README.md).
//!
//! Tolerance: every element of the three returned maps within 1e-4 absolute + 1e-4 relative of
//! torchvision's float32 output. Both compute in f32; the maps are O(1) (He-scaled convs,
//! BatchNorm after every conv), so the only differences are summation orders in the convs (a few
//! ulps each over at most 11 layers). The fixture's BatchNorm statistics are far from identity,
//! so a norm left out, applied twice or fed the wrong tensor fails far outside the tolerance.

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::{Io, assert_close, fixtures};
use glint_nn::backbone::resnet::{ResNet, ResNetBlockKind, ResNetConfig, torchvision_load_options};
use glint_nn::weights::load_safetensors;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// The fixture's shape for `kind`: layers [2, 1, 1, 1], stem width 16.
fn config(kind: ResNetBlockKind) -> ResNetConfig {
    ResNetConfig { block: kind, layers: [2, 1, 1, 1], base_width: 16, ..ResNetConfig::resnet50() }
}

fn load(kind: ResNetBlockKind, config: &ResNetConfig, device: &Device) -> ResNet {
    let name = match kind {
        ResNetBlockKind::Basic => "basic",
        ResNetBlockKind::Bottleneck => "bottleneck",
    };
    let path = fixtures("resnet").join(format!("{name}.safetensors"));
    load_safetensors(config.init(device), &path, &torchvision_load_options(""))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn io(kind: ResNetBlockKind) -> Io {
    let name = match kind {
        ResNetBlockKind::Basic => "basic_io",
        ResNetBlockKind::Bottleneck => "bottleneck_io",
    };
    Io::open(&fixtures("resnet").join(format!("{name}.safetensors")))
}

/// Runs the model on the fixture's input and compares the three maps with `{prefix}{0,1,2}`.
fn check(model: &ResNet, config: &ResNetConfig, io: &Io, prefix: &str, device: &Device) {
    let maps = model.forward(io.float::<4>("input", device));
    assert_eq!(maps.len(), 3, "one map per returned stage");
    for (i, map) in maps.into_iter().enumerate() {
        let name = format!("{prefix}{i}");
        let shape = io.shape(&name);
        let stride = config.out_strides()[i];
        assert_eq!(shape, vec![2, config.out_channels()[i], 64 / stride, 96 / stride], "{name}");
        assert_close(&name, map, &io.f32s(&name), &shape, ATOL, RTOL);
    }
}

#[test]
fn frozen_norm_matches_torchvision_in_eval_mode() {
    for kind in [ResNetBlockKind::Basic, ResNetBlockKind::Bottleneck] {
        let config = config(kind);
        config.validate().unwrap();
        assert_eq!(config.out_strides(), vec![8, 16, 32]);
        // Frozen BatchNorm applies the running statistics on every device, training ones too.
        for device in [Device::flex(), Device::flex().autodiff()] {
            let model = load(kind, &config, &device);
            check(&model, &config, &io(kind), "eval", &device);
        }
    }
}

#[test]
fn trained_norm_matches_torchvision_in_train_mode() {
    for kind in [ResNetBlockKind::Basic, ResNetBlockKind::Bottleneck] {
        let config = ResNetConfig { frozen_norm: false, freeze_at: 0, ..config(kind) };
        let device = Device::flex().autodiff();
        let model = load(kind, &config, &device);
        // For inference the same model uses the running statistics (checked first: a training
        // forward moves them).
        check(&model.clone().valid(), &config, &io(kind), "eval", &Device::flex());
        check(&model, &config, &io(kind), "train", &device);
    }
}

#[test]
fn frozen_parts_get_no_gradient() {
    let config = ResNetConfig { freeze_at: 2, ..config(ResNetBlockKind::Bottleneck) };
    let device = Device::flex().autodiff();
    let model = load(ResNetBlockKind::Bottleneck, &config, &device);
    let loss =
        model.forward(io(ResNetBlockKind::Bottleneck).float::<4>("input", &device)).pop().unwrap().sum();
    let grads = loss.backward();
    assert!(model.conv1.weight.grad(&grads).is_none(), "the stem is frozen");
    assert!(model.layer1[0].conv2.weight.grad(&grads).is_none(), "the first stage is frozen");
    assert!(model.layer2[0].conv2.weight.grad(&grads).is_some(), "the second stage trains");
    let bn = model.layer4[0].bn2.gamma.grad(&grads);
    assert!(bn.is_none(), "frozen BatchNorm is not trained");
}

#[test]
fn shapes_are_checked() {
    assert!(ResNetConfig::resnet18().validate().is_ok());
    assert!(ResNetConfig::resnet101().validate().is_ok());
    assert_eq!(ResNetConfig::resnet18().out_channels(), vec![128, 256, 512]);
    assert_eq!(ResNetConfig::resnet50().out_channels(), vec![512, 1024, 2048]);
    let gap = ResNetConfig { out_stages: vec![1, 3], ..ResNetConfig::resnet18() };
    assert!(gap.validate().unwrap_err().contains("out_stages"));
    let empty = ResNetConfig { layers: [2, 0, 2, 2], ..ResNetConfig::resnet18() };
    assert!(empty.validate().unwrap_err().contains("layers"));
}
