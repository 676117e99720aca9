"""The shared model battery: every architecture x preset gets the same checks.

Runs under whatever KERAS_BACKEND is set; tests/test_backends.py runs it under
tensorflow, jax and torch, each in its own process. Tests marked ``paper`` (paper-size
builds) and ``structure`` (properties of the built graph, the same on every backend)
run on the default backend only.
"""

import json

import keras
import numpy as np
import pytest

import keras_sep
from keras_sep.config import Architecture, DilatedConfig, WaveUNetConfig
from keras_sep.errors import ConfigError
from keras_sep.models import dilated_u_net, presets, register_architecture

ARCHS = ["wave_u_net", "dilated", "dilated_dense"]


def random_mixture(model, batch=2, length=5000, seed=0):
    length = model.valid_length(length)
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (batch, length, model.channels)).astype("float32")


def predict(model, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    return keras_sep.build(request.param, preset="tiny")


def expected_params(cfg) -> int:
    """Parameter count from the paper's description, computed independently of the builder."""
    ch, n_heads = cfg.channels, len(cfg.estimated_sources)

    def conv(k, cin, cout):
        return k * cin * cout + cout

    total = 0
    if isinstance(cfg, WaveUNetConfig):
        f, levels, cin = cfg.filters, cfg.levels, cfg.channels
        for i in range(1, levels + 1):
            total += conv(cfg.down_kernel, cin, f * i)
            cin = f * i
        total += conv(cfg.down_kernel, cin, f * (levels + 1))
        for i in range(levels, 0, -1):
            total += conv(cfg.up_kernel, f * (i + 1) + f * i, f * i)
        head_in = f
    elif not cfg.dense:
        widths = [cfg.filters * b for b in range(1, cfg.num_blocks + 2)]
        cin = ch
        for b in range(cfg.num_blocks):
            for _ in range(cfg.layers_per_block):
                total += conv(cfg.kernel_size, cin, widths[b])
                cin = widths[b]
        for _ in range(cfg.bottleneck_layers):
            total += conv(cfg.kernel_size, cin, widths[-1])
            cin = widths[-1]
        for b in range(cfg.num_blocks - 1, -1, -1):
            cin = cin + widths[b]  # skip concatenated to the block's first layer
            for _ in range(cfg.layers_per_block):
                total += conv(cfg.up_kernel, cin, widths[b])
                cin = widths[b]
        head_in = widths[0]
    else:
        widths = [cfg.filters * b for b in range(1, cfg.num_blocks + 2)]

        def dense(k, cin, growth, n_layers, width):
            count = sum(conv(k, cin + j * growth, growth) for j in range(n_layers))
            return count + conv(1, cin + n_layers * growth, width)

        cin = ch
        for b in range(cfg.num_blocks):
            total += dense(cfg.kernel_size, cin, widths[b], cfg.layers_per_block, widths[b])
            cin = widths[b]
        total += dense(cfg.kernel_size, cin, widths[-1], cfg.bottleneck_layers, widths[-1])
        cin = widths[-1]
        for b in range(cfg.num_blocks - 1, -1, -1):
            # Dense skip: the block input is the previous output plus the skip.
            total += dense(
                cfg.up_kernel, cin + widths[b], widths[b], cfg.layers_per_block, widths[b]
            )
            cin = widths[b]
        head_in = widths[0]
    return total + n_heads * conv(1, head_in + ch, ch)


def run_model_battery(name: str, preset: str) -> None:
    """What every registered architecture and preset must pass (keras-hub's backbone test).

    Builds it from the registry, counts its parameters independently of the builder,
    checks one float32 output per source, runs a short forward pass at two lengths (the
    time axis is dynamic) and round-trips its config through JSON.
    """
    model = keras_sep.build(name, preset=preset)
    cfg = model.arch_config
    assert model.architecture == name and cfg == keras_sep.model_config(name, preset)
    assert model.count_params() == expected_params(cfg)
    shapes = {k: tuple(v.shape) for k, v in zip(model.output_names, model.outputs, strict=True)}
    assert shapes == {s: (None, None, cfg.channels) for s in cfg.sources}
    assert model.input_shape == (None, None, cfg.channels)
    short = cfg.valid_length(200)
    for batch, length in ((1, short), (2, cfg.valid_length(short + 1))):
        x = random_mixture(model, batch=batch, length=length, seed=length)
        y = predict(model, x)
        assert sorted(y) == sorted(cfg.sources)
        for v in y.values():
            assert v.shape == x.shape and v.dtype == np.float32 and np.isfinite(v).all()
        if cfg.output == "difference":  # energy conservation: the outputs sum to the input
            np.testing.assert_allclose(sum(y.values()), x, atol=1e-5)
    config = json.loads(json.dumps(model.get_config()))  # plain JSON types only
    assert type(cfg).from_dict(config["config"]) == cfg


def battery_cases() -> list:
    """Every (architecture, preset) of the registry; full-size ones are ``paper`` and ``slow``."""
    return [
        pytest.param(
            name, preset, marks=[] if preset == "tiny" else [pytest.mark.paper, pytest.mark.slow]
        )
        for name in keras_sep.architectures()
        for preset in presets(name)
    ]


# Full-size models only under the default backend: JAX compiles an initializer per
# weight shape, which makes building them take ~20 s there.
@pytest.mark.parametrize(("name", "preset"), battery_cases())
def test_model_battery(name, preset):
    run_model_battery(name, preset)


def test_the_battery_covers_the_registry():
    cases = {tuple(case.values) for case in battery_cases()}
    assert {(name, "tiny") for name in ARCHS} <= cases
    assert {(name, "paper") for name in ARCHS} <= cases
    assert ("wave_u_net", "original") in cases
    assert sorted(ARCHS) == keras_sep.architectures()


@pytest.mark.slow
@pytest.mark.paper
def test_paper_parameter_counts_match_measured_prototype():
    # FACTS.md: the Keras prototype had about 5.8 M (DDU) and 2.6 M (Dilated U-Net) parameters.
    assert 5.6e6 < keras_sep.build("dilated_dense").count_params() < 5.9e6
    assert 2.5e6 < keras_sep.build("dilated").count_params() < 2.7e6
    assert 10.2e6 < keras_sep.build("wave_u_net", preset="original").count_params() < 10.4e6


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ConfigError, match=r"unknown architecture 'unet'.*'dilated_dense'"):
        keras_sep.build("unet")
    with pytest.raises(ConfigError, match=r"unknown architecture 'unet'.*'wave_u_net'"):
        presets("unet")
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*\['paper', 'tiny'\]"):
        keras_sep.build("dilated", preset="huge")
    with pytest.raises(ConfigError, match=r"field\(s\) \['filter'\]; valid fields: .*'filters'"):
        keras_sep.model_config("dilated_dense", preset="tiny", filter=8)
    with pytest.raises(ConfigError, match=r"'constant:N'"):
        keras_sep.model_config("dilated", dilation="log")
    with pytest.raises(ConfigError, match="filters must be positive"):
        keras_sep.model_config("wave_u_net", filters=0)
    with pytest.raises(ConfigError, match="already registered"):
        register_architecture(Architecture("dilated", DilatedConfig), dilated_u_net)
    assert keras_sep.architectures() == sorted(ARCHS)  # the refused entry was not added


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("name", ARCHS)
def test_mixed_bfloat16_forward_and_training_step(name, mixed_bfloat16):
    model = keras_sep.build(name, preset="tiny")
    convs = [layer for layer in model.layers if hasattr(layer, "kernel")]
    body = [layer for layer in convs if layer.name not in model.sources]
    assert body and all(layer.compute_dtype == "bfloat16" for layer in body)
    # The source head stays float32: tanh estimates and the difference source keep precision.
    heads = [model.get_layer(s) for s in model.sources]
    assert all(layer.compute_dtype == "float32" for layer in heads)
    assert all(v.dtype == "float32" for v in model.weights)  # float32 master weights
    x = random_mixture(model, batch=2, length=1024)
    y = predict(model, x)
    for v in y.values():
        assert v.dtype == np.float32 and v.shape == x.shape and np.isfinite(v).all()
    np.testing.assert_allclose(sum(y.values()), x, atol=1e-5)
    # Copies: convert_to_numpy may share the variable's memory (torch), which the step changes.
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_weights]
    # Eager: one step does not repay tracing the graph (1 s instead of 6 s of CPU).
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    target = {s: x * 0.25 for s in model.sources}
    loss = model.train_on_batch(x, target)
    assert np.isfinite(loss).all()
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_bfloat16_is_close_to_float32_with_a_float32_head(tiny):
    bf16 = keras_sep.SeparationModel(tiny.architecture, tiny.arch_config, precision="bfloat16")
    bf16.set_weights(tiny.get_weights())
    assert all(w.dtype == "float32" for w in bf16.weights)  # weights are not copied to bf16
    x = random_mixture(tiny)
    want, got = predict(tiny, x), predict(bf16, x)
    worst = max(float(np.abs(got[s] - want[s]).max()) for s in want)
    scale = max(float(np.abs(v).max()) for v in want.values())
    # bfloat16 keeps 8 significant bits: each rounding (a layer's input, its weights) is
    # off by at most 2^-8 = 0.4% relative, and independent roundings add like a random
    # walk. Measured: 0.05-0.6% of the largest output on the tiny models, every backend;
    # 2% allows 5 worst-case roundings, while a misloaded weight or a bf16 head fails.
    assert 0 < worst < 0.02 * scale, (worst, scale)
    assert all(v.dtype == np.float32 for v in got.values())
    # The difference head is float32: the stems still sum to the mixture exactly.
    np.testing.assert_allclose(sum(got.values()), x, atol=1e-5)


@pytest.mark.structure
@pytest.mark.parametrize("name", ARCHS)
def test_direct_mode_estimates_every_source(name):
    model = keras_sep.build(name, preset="tiny", output="direct")
    heads = [layer.name for layer in model.layers if layer.name in keras_sep.SOURCES]
    assert sorted(heads) == sorted(keras_sep.SOURCES)
    y = predict(model, random_mixture(model))
    # tanh heads: every estimate is bounded, unlike the 'difference' source
    assert all(np.abs(v).max() <= 1.0 for v in y.values())


def test_valid_length_rule(tiny):
    multiple = tiny.arch_config.length_multiple
    assert tiny.valid_length(1) == multiple
    assert tiny.valid_length(multiple * 3) == multiple * 3
    assert tiny.valid_length(multiple * 3 + 1) == multiple * 4
    x = random_mixture(tiny, length=tiny.valid_length(777))
    assert predict(tiny, x)["vocals"].shape == x.shape


def _conv(model, name):
    return model.get_layer(name)


@pytest.mark.structure
@pytest.mark.parametrize("scheme", ["adaptive", "none", "constant:8"])
def test_dilation_rates_follow_the_scheme(scheme):
    model = keras_sep.build("dilated_dense", preset="tiny", dilation=scheme)
    cfg = model.arch_config
    for b, rates in enumerate(cfg.dilations, 1):
        for j, rate in enumerate(rates, 1):
            assert _conv(model, f"down{b}_conv{j}").dilation_rate == rate
            # Up blocks mirror the down path: the same rates in reverse order.
            assert _conv(model, f"up{b}_conv{j}").dilation_rate == rates[::-1][j - 1]
    for j in range(1, cfg.bottleneck_layers + 1):
        assert _conv(model, f"bottleneck_conv{j}").dilation_rate == 1


@pytest.mark.slow
@pytest.mark.paper
def test_paper_dilations_span_1_to_4096():
    model = keras_sep.build("dilated_dense")
    rates = [
        layer.dilation_rate
        for layer in model.layers
        if layer.name.startswith("down")
        and hasattr(layer, "dilation_rate")
        and "transition" not in layer.name
    ]
    assert rates == [1, 2, 4, 4, 8, 16, 16, 32, 64, 64, 128, 256, 256, 512, 1024, 1024, 2048, 4096]
    ups = [
        layer
        for layer in model.layers
        if layer.name.startswith("up") and "conv" in layer.name and hasattr(layer, "dilation_rate")
    ]
    assert all(type(layer).__name__ == "DilatedConv1DTranspose" for layer in ups)


@pytest.mark.structure
def test_dense_connectivity_is_present():
    model = keras_sep.build("dilated_dense", preset="tiny")
    cfg = model.arch_config
    for b in range(1, cfg.num_blocks + 1):
        growth = cfg.block_growth(b)
        widths = [_conv(model, f"down{b}_conv{j}").kernel.shape[1] for j in (1, 2, 3)]
        assert np.diff(widths).tolist() == [growth, growth]
        # Dense skip: the skip (width of down block b's transition) reaches every up layer.
        skip = cfg.block_transition(b)
        up_widths = [_conv(model, f"up{b}_conv{j}").kernel.shape[2] for j in (1, 2, 3)]
        # Its first layer also gets the output from below (bottleneck or up block b+1).
        assert up_widths[0] == cfg.block_transition(b + 1) + skip
        assert np.diff(up_widths).tolist() == [growth, growth]
    plain = keras_sep.build("dilated", preset="tiny")
    # Without dense connections each layer sees only the previous layer's output.
    assert _conv(plain, "down2_conv2").kernel.shape[1] == plain.arch_config.block_filters(2)


@pytest.mark.structure
def test_dense_off_in_the_dense_entry_is_the_plain_model():
    a = keras_sep.build("dilated_dense", preset="tiny", dense=False)
    b = keras_sep.build("dilated", preset="tiny")
    assert a.count_params() == b.count_params()


def test_config_round_trip(tiny):
    config = tiny.get_config()
    json.dumps(config)  # plain JSON types only
    clone = keras_sep.SeparationModel.from_config(config)
    assert clone.arch_config == tiny.arch_config
    assert clone.count_params() == tiny.count_params()


def test_keras_file_round_trip(tiny, tmp_path):
    x = random_mixture(tiny)
    path = tmp_path / "model.keras"
    tiny.save(path)
    loaded = keras.models.load_model(path)  # default safe_mode: no Lambda layers
    assert isinstance(loaded, keras_sep.SeparationModel)
    for k, v in predict(tiny, x).items():
        np.testing.assert_array_equal(predict(loaded, x)[k], v)


def test_model_folder_round_trip(tiny, tmp_path):
    x = random_mixture(tiny)
    keras_sep.save(tiny, tmp_path / "run", metadata={"note": "hello"})
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["config"]["sources"] == list(keras_sep.SOURCES)
    assert info["config"]["sample_rate"] == 22050 and info["note"] == "hello"
    loaded = keras_sep.load(tmp_path / "run")
    assert loaded.arch_config == tiny.arch_config
    for k, v in predict(tiny, x).items():
        np.testing.assert_array_equal(predict(loaded, x)[k], v)


@pytest.mark.slow
def test_a_few_training_steps_reduce_the_loss(tiny):
    keras.utils.set_random_seed(1)
    model = keras_sep.SeparationModel.from_config(tiny.get_config())
    x = random_mixture(model, batch=4, length=2048, seed=3)
    # A learnable target: each source a fixed fraction of the mixture.
    y = {s: x * w for s, w in zip(model.sources, (0.4, 0.3, 0.2, 0.1), strict=True)}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(x, y, epochs=20, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("impl", ["fold", "spectral", "phase"])
@pytest.mark.parametrize("name", ARCHS)
def test_every_conv_formulation_computes_the_same_model(name, impl):
    """The formulations ``auto`` picks among give one model the same stems (float32
    rounding); at 5000 samples the tiny presets' kernels fit the spectral frames."""
    native = keras_sep.build(name, preset="tiny", conv_impl="native")
    other = keras_sep.build(name, preset="tiny", conv_impl=impl)
    other.set_weights(native.get_weights())
    x = random_mixture(native)
    expected, got = predict(native, x), predict(other, x)
    for source in native.sources:
        np.testing.assert_allclose(got[source], expected[source], atol=1e-5)


@pytest.mark.parametrize("impl", ["fold", "spectral"])
def test_a_training_step_moves_the_weights_alike_under_every_formulation(impl):
    """The gradients through the folded and spectral formulations are the taps' (a
    training step on CPUs takes them where they fit)."""
    models = {}
    for way in ("native", impl):
        keras.utils.set_random_seed(0)
        models[way] = keras_sep.build("dilated_dense", preset="tiny", conv_impl=way)
        models[way].compile(keras.optimizers.SGD(0.1), loss="mse")
    before = models["native"].get_weights()
    models[impl].set_weights(before)
    x = random_mixture(models["native"])
    y = {s: x / 4 for s in models["native"].sources}
    for model in models.values():
        model.train_on_batch(x, y)
    taps, other = models["native"].get_weights(), models[impl].get_weights()
    # The step moved the weights, and alike under both formulations.
    assert max(np.abs(w - b).max() for w, b in zip(taps, before, strict=True)) > 1e-4
    assert max(np.abs(w - v).max() for w, v in zip(taps, other, strict=True)) < 1e-5


@pytest.mark.parametrize("name", ARCHS)
def test_plain_keras_layers_compute_the_same_model(name):
    """conv_impl="keras" (keras.layers.Conv1D / Conv1DTranspose) is the reference build."""
    # TensorFlow's CPU kernel refuses dilated transposed convolutions: undilated there.
    dilation = {"dilation": "none"} if keras.backend.backend() == "tensorflow" else {}
    extra = dilation if name != "wave_u_net" else {}
    plain = keras_sep.build(name, preset="tiny", conv_impl="keras", **extra)
    ours = keras_sep.build(name, preset="tiny", **extra)
    ours.set_weights(plain.get_weights())
    x = random_mixture(ours)
    expected, got = predict(plain, x), predict(ours, x)
    for source in ours.sources:
        np.testing.assert_allclose(got[source], expected[source], atol=1e-5)
