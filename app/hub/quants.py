"""A repo's GGUF files grouped into variants: one per quant label, shards as one, the vision projector apart.

Labels come from file names (the last match wins: `Llama-3-Q8_0-Q4_K_M.gguf` is Q4_K_M) as the quantizers
name them; the header's `general.file_type` can confirm them once it is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from app.runtime.gguf_header import SHARD_NAME

_QUANT = re.compile(
    r"(UD-)?(F32|BF16|F16|Q8_0|Q6_K|Q5_K_[SM]|Q5_K|Q5_[01]|Q4_K_[SM]|Q4_K|Q4_[01]|Q3_K_[SML]|Q3_K|Q2_K(?:_S)?|"
    r"IQ4_(?:XS|NL)|IQ3_(?:XXS|XS|S|M)|IQ2_(?:XXS|XS|S|M)|IQ1_[SM]|TQ[12]_0|MXFP4(?:_MOE)?)(_XL)?"
)

# Bits per weight of each quant (llama.cpp's block layouts), for estimates before a header is read.
BITS_PER_WEIGHT = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.5, "Q5_K_S": 5.5,
    "Q5_K": 5.5, "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 4.5, "Q4_K_S": 4.5, "Q4_K": 4.5, "Q4_1": 5.0,
    "Q4_0": 4.5, "IQ4_XS": 4.25,
    "IQ4_NL": 4.5, "Q3_K_L": 3.44, "Q3_K_M": 3.44, "Q3_K_S": 3.44, "Q3_K": 3.44, "IQ3_M": 3.66, "IQ3_S": 3.44,
    "IQ3_XS": 3.3, "IQ3_XXS": 3.06, "Q2_K": 2.63, "Q2_K_S": 2.63, "IQ2_M": 2.7, "IQ2_S": 2.5,
    "IQ2_XS": 2.31, "IQ2_XXS": 2.06, "IQ1_M": 1.75, "IQ1_S": 1.56, "TQ1_0": 1.69, "TQ2_0": 2.06,
    "MXFP4": 4.25, "MXFP4_MOE": 4.25,
}  # fmt: skip


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None = None  # LFS files only
    blob_id: str | None = None  # the git blob id (siblings' blobId): what verifies a file kept in git


@dataclass(frozen=True)
class Variant:
    label: str  # the quant as users know it: "Q4_K_M", "UD-Q4_K_XL"
    files: tuple[RepoFile, ...]  # the model (its shards in order)
    projector: RepoFile | None = None  # the vision projector (mmproj) that goes with it, if any
    name: str = ""  # how it is shown, where the label alone is ambiguous (two folders with one quant)

    @property
    def title(self) -> str:
        return self.name or self.label

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def base_quant(self) -> str:
        """The quant without the UD- prefix and _XL suffix (what the bits-per-weight table knows)."""
        return self.label.removeprefix("UD-").removesuffix("_XL")

    def bits_per_weight(self, parameters: int | None) -> float | None:
        if parameters:
            return self.size * 8 / parameters
        return BITS_PER_WEIGHT.get(self.base_quant)


def quant_label(path: str) -> str | None:
    """The quant label in a file name (the last match), upper-cased; None if it names none."""
    name = path.rsplit("/", 1)[-1].upper()
    matches = list(_QUANT.finditer(name))
    if not matches:
        return None
    last = matches[-1]
    return f"{last.group(1) or ''}{last.group(2)}{last.group(3) or ''}"


def is_projector(path: str) -> bool:
    return path.rsplit("/", 1)[-1].lower().startswith("mmproj")


def group_variants(files: Iterable[RepoFile]) -> list[Variant]:
    """Every GGUF model in the repo as a variant: shards grouped (in order, sizes summed), sub-folders
    included, non-GGUF files ignored, the vision projector attached to each variant, not listed as one.
    Ordered by size, smallest first."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    projectors = sorted((f for f in ggufs if is_projector(f.path)), key=lambda f: f.size)
    # The usual choice of projector: F16 when there is one, else the smallest.
    projector = next(
        (p for p in projectors if quant_label(p.path) == "F16"), projectors[0] if projectors else None
    )
    groups: dict[tuple[str, str], list[RepoFile]] = {}
    for f in ggufs:
        if is_projector(f.path):
            continue
        shard = SHARD_NAME.match(f.path)
        key = (shard.group("prefix"), shard.group("count")) if shard else (f.path, "")
        groups.setdefault(key, []).append(f)
    variants: list[Variant] = []
    for (prefix, _), members in groups.items():
        members.sort(key=lambda f: f.path)
        label = quant_label(prefix) or quant_label(members[0].path) or prefix.rsplit("/", 1)[-1]
        variants.append(Variant(label, tuple(members), projector))
    # Two files with the same label (in two folders, say) stay apart: tell them by their path.
    counts: dict[str, int] = {}
    for v in variants:
        counts[v.label] = counts.get(v.label, 0) + 1
    variants = [
        v if counts[v.label] == 1 else replace(v, name=f"{v.label} ({v.files[0].path})") for v in variants
    ]
    return sorted(variants, key=lambda v: (v.size, v.label))
