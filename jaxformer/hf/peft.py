"""LoRA adapters <-> PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`).

    hf.peft.save_adapter(config, lora, lora_params, "out")      # peft.PeftModel.from_pretrained(base, "out")
    lora, lora_params = hf.peft.load_adapter(config, "dir")       # written by get_peft_model(...).save_pretrained
    hf.peft.save_merged(config, params, lora_params, lora, "out") # W + (alpha/r) A B, then hf.save

Names and layouts come from the architecture mapping tables (hf/<family>.py): each adaptable
jaxformer kernel (models/lora.py KERNELS) is one HF `nn.Linear`/`Conv1D` module, the rule's HF tensor
name without ".weight", under the same base-model prefix `hf.save` writes (the adapter belongs to the
class named in the exported config.json, e.g. GPT2LMHeadModel, BertForMaskedLM). PEFT stores
lora_A.weight [r, in] and lora_B.weight [out, r] for both module kinds; jaxformer's A [*I, r] and
B [r, *O] are those with the input / output axes flattened (C order, as the kernels' own transforms).

GPT-2's c_attn is one module holding q, k and v side by side (PEFT adapts it with one A shared by
the three). Export: jaxformer's separate q/k/v adapters become one c_attn adapter of rank
R = r x (number of q/k/v adapted), A = [A_q; A_k; A_v] stacked along the rank and B block-diagonal
(zero rows for an unadapted part), with `rank_pattern`/`alpha_pattern` R and alpha R / r, so the
scale alpha / r and the update are exactly jaxformer's. Import: each of q, k, v gets its own copy of
the shared A (rank R) and its rows of B, again the exact same update (they are no longer tied when
trained further in jaxformer).

Per-module ranks, alphas (rank_pattern, alpha_pattern) and rsLoRA scales are folded into B on import
(B * s_module / s_config), so one `LoraConfig` describes the imported tree.

`lora.train_modules` (modules trained in full, such as a new classifier head) are PEFT's
`modules_to_save`: their trained tensors are written under their HF names (e.g.
base_model.model.classifier.weight) and listed in `modules_to_save`; import reads them back into
the tree's copies, so the adapter directory alone carries the whole change to the base.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from jaxformer.config import LORA_MODULES, LoraConfig, ModelConfig
from jaxformer.errors import CheckpointError
from jaxformer.hf.common import Concat, Reshape, Rule
from jaxformer.hf.convert import architecture_for, flat_params, nested, param_shapes, rescan, save, unscan
from jaxformer.models import lora as lora_lib

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
TASK_TYPES = {"decoder_only": "CAUSAL_LM", "encoder_decoder": "SEQ_2_SEQ_LM"}


def adaptable_rules(config: ModelConfig) -> dict[str, Rule]:
    """{HF module name without the base-model prefix ("h.0.attn.c_attn"): rule} for adaptable kernels."""
    arch = architecture_for(config)
    out = {}
    for rule in arch.rules(config.replace(scan_layers=False)):
        if rule.hf.endswith(".weight") and all(p.rsplit("/", 1)[-1] in lora_lib.KERNELS for p in rule.jax):
            out[rule.hf[: -len(".weight")]] = rule
    return out


def export_prefix(config: ModelConfig, module: str) -> str:
    arch = architecture_for(config)
    prefix = arch.prefix if arch.uses_prefix(config) else ""
    return "" if module.startswith(arch.head_names) else prefix


def part_of(transform: Any) -> Reshape:
    part = transform.part if isinstance(transform, Concat) else transform
    if not isinstance(part, Reshape):
        raise RuntimeError(f"no LoRA layout for transform {transform!r}")
    return part


def to_peft(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """jaxformer A [*I, r], B [r, *O] -> PEFT lora_A [r, prod I], lora_B [prod O, r], and prod O."""
    rank = a.shape[-1]
    return a.reshape(-1, rank).T, b.reshape(rank, -1).T, math.prod(b.shape[1:])


def save_adapter(
    config: ModelConfig,
    lora: LoraConfig,
    lora_params: Mapping[str, Any],
    out_dir: str | Path,
    *,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write `lora_params` (either layer layout) as a PEFT LoRA directory; returns the directory.

    The trained copies of `lora.train_modules` go in as PEFT `modules_to_save`.
    """
    unrolled = unscan(dict(lora_params))
    pairs = {
        p: (np.asarray(a, np.float32), np.asarray(b, np.float32))
        for p, (a, b) in lora_lib.adapter_pairs(unrolled, lora.train_modules).items()
    }
    saved = saved_module_tensors(config, lora, unrolled)
    tensors: dict[str, np.ndarray] = {f"{KEY_PREFIX}{name}": value for name, value in saved.items()}
    modules, ranks, alphas, used = [], {}, {}, set()
    fan_in_fan_out = False
    for module, rule in adaptable_rules(config).items():
        parts = [p for p in rule.jax if p in pairs]
        if not parts:
            continue
        used.update(parts)
        name = export_prefix(config, module) + module
        fan_in_fan_out |= not part_of(rule.transform).transpose  # Conv1D stores [in, out]
        if len(rule.jax) == 1:
            lora_a, lora_b, _ = to_peft(*pairs[parts[0]])
        else:  # fused module: ranks stacked, B block-diagonal
            pieces = [to_peft(*pairs[p])[:2] if p in pairs else None for p in rule.jax]
            lora_a, lora_b = fuse(pieces, [out_width(config, p) for p in rule.jax])
            total_rank = lora_a.shape[0]
            if total_rank != lora.rank:
                ranks[re.escape(name)] = total_rank
                alphas[re.escape(name)] = lora.alpha * total_rank / lora.rank
        tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(lora_a)
        tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(lora_b)
        modules.append(name)
    missing = sorted(set(pairs) - used)
    if missing:
        raise CheckpointError(
            f"adapters {missing[:3]} have no Hugging Face module in the {config.family} mapping table."
        )
    adapter_config = {
        "peft_type": "LORA",
        "task_type": TASK_TYPES.get(config.family),
        "base_model_name_or_path": base_model_name_or_path,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": "^(" + "|".join(re.escape(m) for m in modules) + ")$",
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": sorted({name.rsplit(".", 1)[0] for name in saved}) or None,
    }
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(adapter_config, indent=2) + "\n")
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    return out


def module_rules(config: ModelConfig, modules: tuple[str, ...]) -> dict[str, Rule]:
    """{HF tensor name, export prefix included: rule} of every tensor of the top-level jaxformer `modules`.

    A tensor made of parameters of a listed and an unlisted module (none in today's tables) is refused.
    """
    arch = architecture_for(config)
    prefix = arch.prefix if arch.uses_prefix(config) else ""
    out = {}
    for rule in arch.rules(config.replace(scan_layers=False)):
        owners = {path.split("/", 1)[0] in modules for path in rule.jax}
        if owners == {True}:
            out[rule.hf if rule.hf.startswith(arch.head_names) else prefix + rule.hf] = rule
        elif len(owners) == 2:
            raise CheckpointError(f"{rule.hf} mixes parameters of {modules} and of other modules; train both in full.")
    return out


def saved_module_tensors(config: ModelConfig, lora: LoraConfig, unrolled: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{HF tensor name: array} of the trained `lora.train_modules` copies in an (unrolled) adapter tree."""
    flat = flat_params(unrolled)
    return {
        name: rule.transform.to_hf([np.asarray(flat[path], np.float32) for path in rule.jax])
        for name, rule in module_rules(config, lora.train_modules).items()
    }


def fuse(pieces: list[tuple[np.ndarray, np.ndarray] | None], widths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Adapters (lora_A [r_j, in], lora_B [w_j, r_j]) of the parts of a fused module (None: part not adapted)
    -> one adapter: lora_A [sum r_j, in] stacked, lora_B [sum w_j, sum r_j] block-diagonal."""
    present = [piece for piece in pieces if piece is not None]
    lora_a = np.concatenate([a for a, _ in present], axis=0)
    lora_b = np.zeros((sum(widths), lora_a.shape[0]), np.float32)
    row, col = 0, 0
    for width, piece in zip(widths, pieces, strict=True):
        if piece is not None:
            lora_b[row : row + width, col : col + piece[1].shape[1]] = piece[1]
            col += piece[1].shape[1]
        row += width
    return lora_a, lora_b


def out_width(config: ModelConfig, path: str) -> int:
    """Flattened output size of the (unrolled) kernel at `path`."""
    shape = _unrolled_shape(config, path)
    _, inputs = lora_lib.layout(path, len(shape))
    return math.prod(shape[inputs:])


def pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern lookup: the first key matching the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(config: ModelConfig, adapter_dir: str | Path) -> tuple[LoraConfig, dict[str, Any]]:
    """Read a PEFT LoRA directory for a model of `config`; returns (LoraConfig, adapters in config's layout)."""
    directory = Path(adapter_dir).expanduser()
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for file in (config_path, weights_path):
        if not file.is_file():
            raise CheckpointError(f"{directory} is not a PEFT adapter directory: {file.name} is missing.")
    peft = json.loads(config_path.read_text())
    if peft.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(
            f"{config_path}: peft_type={peft.get('peft_type')!r}; jaxformer reads LORA adapters only."
        )
    for key, ok in (("use_dora", False), ("bias", "none")):
        if peft.get(key, ok) != ok:
            raise CheckpointError(f"{config_path}: {key}={peft[key]!r} is not supported (needs {ok!r}).")
    rank, alpha = int(peft["r"]), float(peft["lora_alpha"])
    rslora = bool(peft.get("use_rslora", False))
    lora = LoraConfig(rank=rank, alpha=alpha, dropout=float(peft.get("lora_dropout", 0.0)), targets=("query",))
    arch = architecture_for(config)
    rules = adaptable_rules(config)
    tensors = load_file(str(weights_path))
    flat, train_modules = _saved_modules(config, peft.get("modules_to_save") or [], tensors, weights_path)
    names = sorted({k[: -len(".lora_A.weight")] for k in tensors if k.endswith(".lora_A.weight")})
    if not names or len(tensors) != 2 * len(names):
        raise CheckpointError(f"{weights_path}: expected pairs of lora_A/lora_B weights, found {sorted(tensors)[:4]}.")
    for full in names:
        module = full[len(KEY_PREFIX) :] if full.startswith(KEY_PREFIX) else full
        local = module[len(arch.prefix) :] if arch.prefix and module.startswith(arch.prefix) else module
        if local not in rules:
            raise CheckpointError(
                f"PEFT adapter {directory} adapts {module!r}, which is not an attention or MLP projection of this "
                f"{arch.model_type} model (or belongs to another architecture); jaxformer adapts {list(LORA_MODULES)}."
            )
        lora_a, lora_b = tensors[f"{full}.lora_A.weight"], tensors[f"{full}.lora_B.weight"]
        r_m = lora_a.shape[0]
        a_m = float(pattern_value(peft.get("alpha_pattern") or {}, module, alpha))
        scale = a_m / math.sqrt(r_m) if rslora else a_m / r_m
        ratio = np.float32(scale / lora.scale)
        rule = rules[local]
        widths = [out_width(config, p) for p in rule.jax]
        if lora_b.shape != (sum(widths), r_m):
            raise CheckpointError(
                f"PEFT adapter {module!r}: lora_B {tuple(lora_b.shape)} does not fit this model (needs "
                f"[{sum(widths)}, {r_m}]): the adapter belongs to another model size."
            )
        row = 0
        for kernel, width in zip(rule.jax, widths, strict=True):
            shape = _unrolled_shape(config, kernel)
            _, inputs = lora_lib.layout(kernel, len(shape))
            if lora_a.shape[1] != math.prod(shape[:inputs]):
                raise CheckpointError(
                    f"PEFT adapter {module!r}: lora_A {tuple(lora_a.shape)} does not fit this model (input size "
                    f"{math.prod(shape[:inputs])}): the adapter belongs to another model size."
                )
            b = lora_b[row : row + width].T  # [r, prod O]
            b = b if ratio == 1 else b * ratio
            flat[f"{kernel}/lora_a"] = np.ascontiguousarray(lora_a.T.reshape(*shape[:inputs], r_m))
            flat[f"{kernel}/lora_b"] = np.ascontiguousarray(b.reshape(r_m, *shape[inputs:]).astype(np.float32))
            row += width
    adapted = sorted({p.rsplit("/", 1)[0] for p in flat if p.split("/", 1)[0] not in train_modules})
    lora = LoraConfig(
        rank=rank, alpha=alpha, dropout=lora.dropout, targets=_targets(config, adapted), train_modules=train_modules
    )
    tree = nested({k: jnp.asarray(v) for k, v in flat.items()})
    try:
        return lora, rescan(config, tree)
    except (ValueError, KeyError) as err:
        raise CheckpointError(
            f"PEFT adapter {directory} adapts different modules in different layers, which scan_layers=True "
            f"cannot stack ({err}); load it with scan_layers=False."
        ) from None


def _saved_modules(
    config: ModelConfig, modules_to_save: list[str], tensors: dict[str, np.ndarray], weights_path: Path
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Pop the `modules_to_save` tensors out of `tensors`; returns ({jaxformer path: array}, top-level modules).

    Every parameter of each top-level jaxformer module they touch must be present (a module is
    trained in full or not at all), else a CheckpointError names what is missing.
    """
    saved = {k: tensors.pop(k) for k in list(tensors) if not k.endswith((".lora_A.weight", ".lora_B.weight"))}
    if not saved:
        return {}, ()
    if not modules_to_save:
        raise CheckpointError(f"{weights_path}: tensors {sorted(saved)[:3]} are not LoRA weights nor modules_to_save.")
    names = {k[len(KEY_PREFIX) :] if k.startswith(KEY_PREFIX) else k: v for k, v in saved.items()}
    shapes = param_shapes(config.replace(scan_layers=False))
    every = module_rules(config, tuple({p.split("/", 1)[0] for p in shapes}))
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise CheckpointError(
            f"{weights_path}: modules_to_save tensors {unknown[:3]} are not tensors of this "
            f"{architecture_for(config).model_type} model; the adapter belongs to another architecture."
        )
    modules = tuple(sorted({p.split("/", 1)[0] for name in names for p in every[name].jax}))
    wanted = module_rules(config, modules)
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise CheckpointError(
            f"{weights_path}: modules_to_save lacks {missing[:3]}; jaxformer trains whole modules {list(modules)}."
        )
    flat: dict[str, np.ndarray] = {}
    for name, rule in wanted.items():
        want = rule.transform.hf_shape([shapes[p] for p in rule.jax])
        if tuple(names[name].shape) != tuple(want):
            raise CheckpointError(
                f"{weights_path}: {name} is {tuple(names[name].shape)} but this model needs {tuple(want)}: the "
                "adapter belongs to another model size or label count."
            )
        arrays = rule.transform.to_jax(np.asarray(names[name], np.float32), [shapes[p] for p in rule.jax])
        flat.update(zip(rule.jax, arrays, strict=True))
    return flat, modules


def _unrolled_shape(config: ModelConfig, path: str) -> tuple[int, ...]:
    return param_shapes(config.replace(scan_layers=False))[path]


def _targets(config: ModelConfig, adapted: list[str]) -> tuple[str, ...]:
    """Module names when they select exactly the adapted kernels, else one anchored regex per kernel."""
    kinds = {p.rsplit("/", 1)[-1] for p in adapted}
    names = tuple(name for name, leaf in LORA_MODULES.items() if leaf in kinds)
    shapes = param_shapes(config.replace(scan_layers=False))
    selected = sorted(p for p in shapes if p.rsplit("/", 1)[-1] in {LORA_MODULES[n] for n in names})
    if selected == adapted:
        return names
    return tuple(f"^{re.escape(p)}$" for p in adapted)


def save_merged(
    config: ModelConfig,
    params: Mapping[str, Any],
    lora_params: Mapping[str, Any],
    lora: LoraConfig,
    out_dir: str | Path,
    **kwargs: Any,
) -> Path:
    """A Hugging Face checkpoint of the base architecture with the adapters merged in (W + alpha/r A B)."""
    return save(config, lora_lib.merge(params, lora_params, lora), out_dir, **kwargs)
