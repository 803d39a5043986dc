import dataclasses
import inspect

import pytest
import torch

from shared.errors import ConfigError
from shared.experiment import parameter_counts
from shared.latent_experiment import decode_future, encode_context, predict_future
from shared.predictor import (
    PREDICTOR_CONFIGS,
    LatentPredictor,
    PredictorConfig,
    codes_from_logits,
    grid_positions,
    latent_loss,
    predictor_config,
)
from shared.testing import micro_clips, micro_tokenizer

CODE_DIM = 18


def random_codes(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


def micro_model(seed=0, **changes):
    torch.manual_seed(seed)
    config = dataclasses.replace(predictor_config("micro"), **changes)
    return LatentPredictor(config).eval()


def test_presets_build_and_bad_values_are_config_errors():
    assert set(PREDICTOR_CONFIGS) == {"micro", "tiny", "full"}
    full = predictor_config("full")
    assert (full.depth, full.heads, full.width, full.code_dim) == (12, 8, 256, CODE_DIM)
    sizes = [parameter_counts(LatentPredictor(predictor_config(n)))["trainable"]
             for n in PREDICTOR_CONFIGS]
    assert sizes == sorted(sizes)  # micro < tiny < full
    with pytest.raises(ConfigError, match="unknown predictor preset 'huge'"):
        predictor_config("huge")
    with pytest.raises(ConfigError, match="multiple of heads"):
        PredictorConfig(width=30, heads=4)
    with pytest.raises(ConfigError, match="loss='l1'"):
        PredictorConfig(loss="l1")
    with pytest.raises(TypeError):
        PredictorConfig(18)  # keyword-only


@pytest.mark.parametrize("context, future", [((2, 4, 4), 1), ((3, 8, 8), 2), ((1, 3, 5), 3)])
def test_forward_shapes_for_any_grid(context, future):
    model = micro_model()
    t, h, w = context
    logits = model(random_codes((2, CODE_DIM, t, h, w)), future_grid=(future, h, w))
    assert logits.shape == (2, CODE_DIM, future, h, w)
    assert torch.isfinite(logits).all()
    codes = model.predict_codes(random_codes((2, CODE_DIM, t, h, w)), (future, h, w))
    assert codes.shape == logits.shape
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.usefixtures("one_torch_thread")
def test_long_sequence_has_no_table_limit():
    model = micro_model()
    # 2,048 context + 2,048 future tokens: far beyond the seeds' 1,000-entry table.
    logits = model(random_codes((1, CODE_DIM, 8, 16, 16)), future_grid=(8, 16, 16))
    assert logits.shape == (1, CODE_DIM, 8, 16, 16)
    assert torch.isfinite(logits).all()


def test_positions_cover_a_25600_token_grid_and_continue_in_time():
    pos = grid_positions((4, 80, 80), 256)
    assert pos.shape == (25_600, 256)
    assert torch.isfinite(pos).all()
    assert torch.unique(pos, dim=0).shape[0] == 25_600  # every position is distinct
    # The future grid (t_offset = Tc') gets the same vectors as the tail of one long grid.
    whole = grid_positions((5, 6, 7), 32)
    future = grid_positions((2, 6, 7), 32, t_offset=3)
    torch.testing.assert_close(future, whole[3 * 6 * 7 :])


def test_forward_takes_only_the_context_and_batch_items_stay_apart():
    # No true future can leak in: forward has no argument that could carry future codes.
    params = list(inspect.signature(LatentPredictor.forward).parameters)
    assert params == ["self", "context_codes_bcthw", "future_grid", "condition"]
    with pytest.raises(ConfigError, match="future_grid"):
        micro_model()(random_codes((1, CODE_DIM, 2, 4, 4)), random_codes((1, CODE_DIM, 1, 4, 4)))

    model = micro_model()
    context = random_codes((2, CODE_DIM, 2, 4, 4))
    logits = model(context, (2, 4, 4))
    torch.testing.assert_close(model(context, (2, 4, 4)), logits)  # deterministic in eval
    changed = context.clone()
    changed[1] = random_codes((CODE_DIM, 2, 4, 4), seed=1)
    logits2 = model(changed, (2, 4, 4))
    torch.testing.assert_close(logits2[0], logits[0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(logits2[1], logits[1])  # the context is actually used


@pytest.mark.parametrize("copy_prior", [False, True])
def test_gradients_reach_every_parameter(copy_prior):
    model = micro_model(condition_dim=12, copy_prior=copy_prior).train()
    context = random_codes((2, CODE_DIM, 2, 4, 4))
    logits = model(context, (1, 4, 4), condition=torch.randn(2, 3, 12))
    latent_loss(logits, random_codes(logits.shape, seed=1)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []
    assert parameter_counts(model) == {"trainable": sum(p.numel() for p in model.parameters()),
                                      "frozen": 0}
    model.head.requires_grad_(False)
    head_size = sum(p.numel() for p in model.head.parameters())
    assert parameter_counts(model)["frozen"] == head_size


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("kind", ["bits", "mse"])
def test_loss_falls_on_a_fixed_batch(kind):
    model = micro_model(loss=kind).train()
    # Random targets: the model can only memorise them, the classic overfit-one-batch check.
    context = random_codes((2, CODE_DIM, 2, 4, 4))
    target = random_codes((2, CODE_DIM, 1, 4, 4), seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        result = latent_loss(model(context, (1, 4, 4)), target, kind)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        history.append((result.loss.item(), result.bit_accuracy.item()))
    (first_loss, first_acc), (last_loss, last_acc) = history[0], history[-1]
    assert last_loss < 0.8 * first_loss
    assert last_acc > first_acc + 0.1


def test_loss_values_and_bit_accuracy():
    target = random_codes((2, CODE_DIM, 1, 2, 2))
    perfect = latent_loss(target * 20.0, target)
    assert perfect.bit_accuracy.item() == 1.0 and perfect.loss.item() < 1e-6
    wrong = latent_loss(-target * 20.0, target, "mse")
    assert wrong.bit_accuracy.item() == 0.0
    assert wrong.loss.item() == pytest.approx(4.0, rel=1e-4)  # (tanh(-20 c) - c)^2 -> 4
    undecided = latent_loss(torch.zeros_like(target), target)
    assert undecided.loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert codes_from_logits(torch.zeros(3)).tolist() == [-1.0, -1.0, -1.0]  # 0 -> -1 as LFQ
    with pytest.raises(ConfigError, match="differ in shape"):
        latent_loss(target[:, :, :, :1], target)
    with pytest.raises(ConfigError, match="kind='l1'"):
        latent_loss(target, target, "l1")


def test_condition_tokens_change_the_output_and_get_gradients():
    model = micro_model(condition_dim=24)
    context = random_codes((2, CODE_DIM, 2, 4, 4))
    condition = torch.randn(2, 2, 24)
    out_a = model(context, (1, 4, 4), condition=condition)
    out_b = model(context, (1, 4, 4), condition=condition + 1.0)
    # Small at init (weights have std 0.02) but real: the same inputs give identical outputs.
    assert (out_a - out_b).abs().max() > 1e-5
    torch.testing.assert_close(model(context, (1, 4, 4), condition=condition), out_a)
    assert model(context, (1, 4, 4), condition=torch.randn(2, 5, 24)).shape == out_a.shape

    (out_a - out_b).pow(2).sum().backward()
    assert model.condition_in is not None
    assert model.condition_in.weight.grad is not None
    assert model.condition_in.weight.grad.abs().sum() > 0

    with pytest.raises(ConfigError, match="expected \\(2, N_cond, 24\\)"):
        model(context, (1, 4, 4), condition=torch.randn(2, 2, 23))
    with pytest.raises(ConfigError, match="condition_dim=0"):
        micro_model()(context, (1, 4, 4), condition=condition)


def test_patches_round_trip_and_keep_positions_together():
    from shared.predictor import _patchify, _unpatchify

    codes = torch.randn(2, 18, 3, 8, 8)
    tokens = _patchify(codes, 2)
    assert tokens.shape == (2, 3 * 4 * 4, 18 * 4)
    assert torch.equal(_unpatchify(tokens, (3, 4, 4), 2), codes)
    # Token 1 of frame 0 holds exactly the 2x2 latent positions (h 0..1, w 2..3).
    assert torch.equal(tokens[0, 1].reshape(2, 2, 18).permute(2, 0, 1), codes[0, :, 0, 0:2, 2:4])


def test_patched_predictor_predicts_the_full_grid_and_rejects_odd_grids():
    from shared.errors import ConfigError

    model = LatentPredictor(PredictorConfig(width=32, depth=1, heads=2, patch=2))
    assert model(torch.randn(1, 18, 2, 8, 8), (2, 8, 8)).shape == (1, 18, 2, 8, 8)
    with pytest.raises(ConfigError, match="patch=2"):
        model(torch.randn(1, 18, 2, 7, 8), (2, 7, 8))


def test_readout_gives_signs_or_expected_codes():
    logits = torch.tensor([-30.0, -1.0, 0.0, 2.0, 30.0]).view(1, 5, 1, 1, 1)
    signs = micro_model().readout(logits)
    assert signs.shape == (1, *logits.shape)  # one draw
    assert signs.flatten().tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0]
    mean = micro_model(readout="mean").readout(logits).flatten()
    expected = 2 * torch.sigmoid(logits.flatten()) - 1  # E[code] under the bit probabilities
    assert torch.allclose(mean, expected, atol=1e-6)
    assert mean[2].item() == 0.0 and -1.0 <= mean.min() and mean.max() <= 1.0
    mse_mean = micro_model(readout="mean", loss="mse").readout(logits).flatten()
    assert torch.allclose(mse_mean, torch.tanh(logits.flatten()))
    with pytest.raises(ConfigError, match="readout='median'"):
        PredictorConfig(readout="median")


def test_samples_readout_draws_codes_at_the_predicted_bit_probabilities():
    logits = torch.tensor([-30.0, -1.0, 0.0, 2.0, 30.0]).view(1, 5, 1, 1, 1)
    model = micro_model(readout="samples", readout_samples=4000)
    rng_before = torch.get_rng_state()
    draws = model.readout(logits)
    assert torch.equal(torch.get_rng_state(), rng_before)  # its own generator
    assert draws.shape == (4000, *logits.shape)
    assert set(draws.unique().tolist()) == {-1.0, 1.0}
    # The share of +1 draws of each bit is its predicted probability; certain bits never flip.
    share_plus = (draws > 0).float().mean(0).flatten()
    expected = torch.sigmoid(logits.flatten())
    assert torch.allclose(share_plus, expected, atol=0.03)
    assert share_plus[0] == 0.0 and share_plus[-1] == 1.0
    # Antithetic pairs: draw k + S/2 uses 1 - u where draw k used u, so a bit at probability
    # 1/2 comes out +1 in exactly one draw of every pair.
    assert torch.all(draws[:2000, 0, 2] != draws[2000:, 0, 2])
    # The same logits always give the same draws: evaluation is repeatable.
    again = micro_model(readout="samples", readout_samples=4000).readout(logits)
    assert torch.equal(draws, again)
    # Under the "mse" loss a prediction is tanh(logit), so P(+1) = (1 + tanh(logit)) / 2.
    mse_draws = micro_model(readout="samples", readout_samples=4000, loss="mse").readout(logits)
    expected_mse = (1 + torch.tanh(logits.flatten())) / 2
    assert torch.allclose((mse_draws > 0).float().mean(0).flatten(), expected_mse, atol=0.03)
    odd = micro_model(readout="samples", readout_samples=3).readout(logits)
    assert odd.shape == (3, *logits.shape)
    with pytest.raises(ConfigError, match="readout_samples=0"):
        PredictorConfig(readout="samples", readout_samples=0)


def test_copy_prior_adds_the_last_context_frame_times_a_learned_gain():
    from shared.predictor import COPY_GAIN_INIT

    context = random_codes((2, CODE_DIM, 3, 4, 4), seed=3)
    with_prior = micro_model(copy_prior=True)
    without = micro_model(copy_prior=False)  # same seed: the same transformer weights
    assert with_prior.copy_gain is not None and without.copy_gain is None
    difference = with_prior(context, (2, 4, 4)) - without(context, (2, 4, 4))
    # Every future frame gets the last context frame's codes at the initial gain, and only
    # the last context frame matters to the prior.
    expected = COPY_GAIN_INIT * context[:, :, -1:].expand(-1, -1, 2, -1, -1)
    assert torch.allclose(difference, expected, atol=1e-5)
    assert (parameter_counts(with_prior)["trainable"]
            - parameter_counts(without)["trainable"]) == CODE_DIM

    # The prior's path is detached: the gradient that reaches the context codes (a trainable
    # tokenizer's, in joint-i3d) is the transformer's alone.
    grads = []
    for model in (with_prior, without):
        codes = context.clone().requires_grad_()
        model(codes, (2, 4, 4)).sum().backward()
        grads.append(codes.grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


def test_predict_future_averages_the_frames_decoded_from_each_draw():
    tokenizer = micro_tokenizer()
    clips = micro_clips(2)
    context, future_frames = clips[:, :, :5], clips.shape[2] - 5
    model = micro_model(readout="samples", readout_samples=3)
    with torch.no_grad():
        prediction = predict_future(tokenizer, model, context, future_frames)
        context_codes = encode_context(tokenizer, context)
        logits = model(context_codes, (future_frames // 4, *context_codes.shape[3:]))
        decoded = [decode_future(tokenizer, context_codes, codes, future_frames)
                   for codes in model.readout(logits)]
        assert len(decoded) == 3 and not torch.allclose(decoded[0], decoded[1])
        assert torch.allclose(prediction, torch.stack(decoded).mean(0), atol=1e-6)
        assert torch.equal(prediction, predict_future(tokenizer, model, context, future_frames))
