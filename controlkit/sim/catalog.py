"""Plants by name: :func:`load_plant` turns ``vllm-h100:llama-2-7b`` (or a model file) into a plant.

It sits above :mod:`controlkit.sim.plants` (the :class:`~controlkit.sim.plants.Plant` and the
vLLM-on-H100 builder) and :mod:`controlkit.sim.profiles` (Vidur, SplitwiseSim, model files),
so neither of those imports the other's builders (no import cycle).
"""

from __future__ import annotations

from pathlib import Path

from controlkit.sim.plants import Plant, vllm_h100_plant
from controlkit.sim.profiles import model_file_plant, splitwise_plant, vidur_plant
from identification.errors import ControlkitError

__all__ = ["load_plant"]


def _parse_name(name: str) -> tuple[str, str]:
    family, sep, model = name.partition(":")
    if not sep or not model:
        raise ControlkitError(
            f"plant {name!r} is neither a file nor a name like 'vllm-h100:llama-2-7b', "
            "'vidur-h100:llama-2-7b', 'splitwise-h100-tp4:llama2-70b'"
        )
    return family, model


def load_plant(name_or_path: str | Path, *, data_dir: Path | None = None) -> Plant:
    """Build a plant by name or from a ``controlkit.model/1`` file.

    Parameters
    ----------
    name_or_path
        ``vllm-h100:<model>`` (opt-1.3b, opt-2.7b, llama-2-7b, llama-2-13b),
        ``vidur-<gpu>:<model>`` (a100/h100/a40; e.g. llama-2-7b, llama-2-70b, phi-2),
        ``splitwise-<gpu>-tp<k>:<model>`` (a100/h100; llama2-70b, bloom-176b), or a path to a
        model file written by ``controlkit identify``.
    data_dir
        The shared data folder (default :func:`~controlkit.sim.plants.default_data_dir`).

    Raises
    ------
    ControlkitError
        Unknown name; :class:`TelemetryError` when a data file is missing or malformed.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".json" or (path.is_file() and ":" not in text):
        return model_file_plant(path)
    family, model = _parse_name(text)
    if family == "vllm-h100":
        return vllm_h100_plant(model, data_dir)
    if family.startswith("vidur-"):
        return vidur_plant(family.removeprefix("vidur-"), model, data_dir)
    if family.startswith("splitwise-"):
        return splitwise_plant(family.removeprefix("splitwise-"), model, data_dir)
    raise ControlkitError(
        f"unknown plant family {family!r} in {text!r}; known: vllm-h100, vidur-<gpu>, splitwise-<gpu>-tp<k>"
    )
