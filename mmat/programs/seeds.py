"""Seeds: what one synthesis unit starts from (a domain, the tools, a few example requests).

Seed ``i`` of a run depends only on (rng_seed, i), never on how many seeds the run asked for, so a
rerun with more seeds reproduces the first ones and a resumed run redoes exactly the missing ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mmat.errors import ConfigError
from mmat.ids import content_id
from mmat.signatures.queries import SeedExample

__all__ = ["Domain", "Seed", "load_domains", "load_seed_examples", "make_seed", "make_seeds", "ASSETS_DIR"]

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_EXAMPLES_PER_SEED = 3


class Domain(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str

    def render(self) -> str:
        """How the teacher sees the domain."""
        return f"{self.name}: {self.description}"


class Seed(BaseModel):
    """Input of one Synthesis call."""

    model_config = ConfigDict(extra="forbid")

    index: int
    domain: Domain
    tools: list[str]
    examples: list[SeedExample]


def _load_json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: pass an existing JSON file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None


def load_domains(path: Path | None = None) -> list[Domain]:
    """Domains from ``assets/domains.json`` (or ``path``: a JSON list of {name, description})."""
    data = _load_json(path or ASSETS_DIR / "domains.json")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path or 'domains.json'} must be a non-empty JSON list of {{name, description}}")
    return [Domain.model_validate(d) for d in data]


def load_seed_examples(path: Path | None = None) -> list[SeedExample]:
    """Example requests from ``assets/seeds.json`` (or ``path``)."""
    data = _load_json(path or ASSETS_DIR / "seeds.json")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path or 'seeds.json'} must be a non-empty JSON list of seed examples")
    return [SeedExample.model_validate(d) for d in data]


def make_seed(
    index: int,
    *,
    tools: Sequence[str],
    rng_seed: int = 0,
    n_examples: int = DEFAULT_EXAMPLES_PER_SEED,
    domains: Sequence[Domain] | None = None,
    examples: Sequence[SeedExample] | None = None,
) -> Seed:
    """Seed ``index``: a domain (domains taken in a shuffled cycle) and examples that only use ``tools``.

    Examples from the seed's domain come first; the rest are drawn from other domains. Examples that
    need tools outside ``tools`` are never shown: the teacher would copy them.
    """
    domains = list(domains) if domains is not None else load_domains()
    examples = list(examples) if examples is not None else load_seed_examples()
    allowed = set(tools)
    order = list(range(len(domains)))
    random.Random(content_id("domain-order", rng_seed)).shuffle(order)
    domain = domains[order[index % len(domains)]]
    rng = random.Random(content_id("seed", rng_seed, index))
    usable = [e for e in examples if set(e.tools) <= allowed]
    same = [e for e in usable if e.domain == domain.name]
    other = [e for e in usable if e.domain != domain.name]
    rng.shuffle(same)
    rng.shuffle(other)
    return Seed(index=index, domain=domain, tools=list(tools), examples=(same + other)[:n_examples])


def make_seeds(n: int, *, start: int = 0, **kwargs) -> list[Seed]:
    """Seeds ``start .. start+n-1`` (see :func:`make_seed` for the keyword arguments)."""
    domains = kwargs.pop("domains", None) or load_domains()
    examples = kwargs.pop("examples", None) or load_seed_examples()
    return [make_seed(i, domains=domains, examples=examples, **kwargs) for i in range(start, start + n)]
