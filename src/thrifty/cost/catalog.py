"""The GPU catalog: specifications and dated, sourced prices, shipped as package data.

The catalog is a TOML file of `[[gpu]]` and `[[price]]` tables (src/thrifty/data/gpus.toml).
A user file in the same format adds GPUs or overrides prices: `$THRIFTY_HOME/gpus.toml` is read
when present, and `--catalog FILE` on the commands that use the catalog. A user's `[[gpu]]`
with a known id replaces that GPU's fields it names; a user's `[[price]]` replaces the shipped
price of the same GPU, provider, kind and term, and otherwise adds one.
"""

import datetime
import difflib
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

from thrifty.core import paths
from thrifty.core.errors import BadInput

PRICE_KINDS = ("on-demand", "spot", "reserved")
STALE_AFTER_DAYS = 365
HOURS_PER_MONTH = 730  # 8,760 hours a year / 12, the convention of cloud price lists

GPU_FIELDS = {  # name -> (type, required)
    "id": (str, True), "name": (str, True), "vendor": (str, True),
    "memory_gib": (float, True), "bandwidth_gb_s": (float, True),
    "bf16_tflops": (float, True), "int8_tops": (float, False), "fp8_tflops": (float, False),
    "tdp_w": (float, True), "interconnect": (str, True), "interconnect_gb_s": (float, True),
    "max_per_node": (int, False), "aliases": (list, False), "spec_source": (str, True),
    "notes": (str, False), "purchase_usd": (float, False), "purchase_date": (datetime.date, False),
    "purchase_source": (str, False),
    "efficiency_memory": (float, False), "efficiency_compute": (float, False),
    "step_overhead_ms": (float, False), "request_lag_ms": (float, False),
    "efficiency_source": (str, False),
}
PRICE_FIELDS = {
    "gpu": (str, True), "provider": (str, True), "kind": (str, True),
    "usd_per_gpu_hour": (float, True), "date": (datetime.date, True), "source": (str, True),
    "term": (str, False), "region": (str, False), "instance": (str, False), "notes": (str, False),
}


@dataclass(frozen=True)
class Gpu:
    id: str
    name: str
    vendor: str
    memory_gib: float  # usable device memory as the driver reports it
    bandwidth_gb_s: float  # peak memory bandwidth, 1e9 bytes/s
    bf16_tflops: float  # dense (no 2:4 sparsity) bf16/fp16 tensor throughput
    tdp_w: float
    interconnect: str
    interconnect_gb_s: float
    spec_source: str
    fp8_tflops: float | None = None  # None: no fp8 tensor cores
    # dense int8 tensor throughput; None where vLLM has no INT8 W8A8 kernel (Blackwell)
    int8_tops: float | None = None
    max_per_node: int = 8
    aliases: list[str] = field(default_factory=list)
    notes: str = ""
    purchase_usd: float | None = None
    purchase_date: datetime.date | None = None
    purchase_source: str = ""
    # vLLM's efficiencies on this GPU, fitted to measurements (None: no fit of its own)
    efficiency_memory: float | None = None
    efficiency_compute: float | None = None
    step_overhead_ms: float | None = None
    request_lag_ms: float | None = None
    efficiency_source: str = ""

    @property
    def has_efficiency_fit(self) -> bool:
        return self.efficiency_memory is not None and self.efficiency_compute is not None


@dataclass(frozen=True)
class Price:
    gpu: str
    provider: str
    kind: str
    usd_per_gpu_hour: float
    date: datetime.date
    source: str
    term: str = ""  # e.g. "1 year" for reserved capacity
    region: str = ""
    instance: str = ""
    notes: str = ""
    origin: str = "catalog"  # the file it came from

    def key(self) -> tuple[str, str, str, str]:
        return (self.gpu, self.provider.lower(), self.kind, self.term)

    def age_days(self, today: datetime.date) -> int:
        return (today - self.date).days


@dataclass
class Catalog:
    gpus: dict[str, Gpu]
    prices: list[Price]
    files: list[str]

    def names(self) -> list[str]:
        return sorted({*self.gpus, *(a for g in self.gpus.values() for a in g.aliases)})

    def find(self, name: str) -> Gpu:
        """The GPU called `name` (its id or an alias, any case), or an error that suggests."""
        wanted = normalise(name)
        for gpu in self.gpus.values():
            if wanted == normalise(gpu.id) or wanted in (normalise(a) for a in gpu.aliases):
                return gpu
        close = difflib.get_close_matches(wanted, [normalise(n) for n in self.names()], n=3,
                                          cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise BadInput(f"The GPU {name!r} is not in the catalog.{hint} Run `thrifty gpus` for the "
                       "list, or add it to a catalog file (see `thrifty gpus --help`).")

    def select(self, names: list[str] | None) -> list[Gpu]:
        return [self.find(n) for n in names] if names else list(self.gpus.values())

    def prices_for(self, gpu_id: str, kinds: tuple[str, ...] = PRICE_KINDS) -> list[Price]:
        return sorted((p for p in self.prices if p.gpu == gpu_id and p.kind in kinds),
                      key=lambda p: p.usd_per_gpu_hour)

    def cheapest(self, gpu_id: str, kind: str) -> Price | None:
        prices = self.prices_for(gpu_id, (kind,))
        return prices[0] if prices else None

    def stale_prices(self, today: datetime.date | None = None) -> list[Price]:
        today = today or datetime.date.today()
        return [p for p in self.prices if p.age_days(today) > STALE_AFTER_DAYS]


def normalise(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def shipped_catalog_text() -> str:
    return (resources.files("thrifty") / "data" / "gpus.toml").read_text()


def user_catalog_path() -> Path:
    return paths.home() / "gpus.toml"


def load(extra: str | Path | None = None) -> Catalog:
    """The shipped catalog, then $THRIFTY_HOME/gpus.toml if present, then `extra` on top."""
    gpus: dict[str, Gpu] = {}
    prices: dict[tuple, Price] = {}
    files = ["thrifty/data/gpus.toml"]
    _merge(parse(shipped_catalog_text(), "thrifty/data/gpus.toml"), gpus, prices, "catalog")
    user_file = user_catalog_path()
    for path in ([user_file] if user_file.is_file() else []) + ([extra] if extra else []):
        path = Path(path).expanduser()
        if not path.is_file():
            raise BadInput(f"The catalog file {path} does not exist. Give a TOML file of [[gpu]] "
                           "and [[price]] tables (see `thrifty gpus --help`).")
        _merge(parse(path.read_text(), str(path)), gpus, prices, str(path))
        files.append(str(path))
    for price in prices.values():
        if price.gpu not in gpus:
            raise BadInput(f"A price in {price.origin} is for the GPU {price.gpu!r}, which no "
                           "[[gpu]] table defines. Fix the gpu field or add the GPU.")
    return Catalog(gpus, list(prices.values()), files)


def _merge(parsed: dict, gpus: dict, prices: dict, origin: str) -> None:
    for entry in parsed["gpu"]:
        line = entry.pop("_line")
        known = gpus.get(entry["id"])
        missing = [k for k, (_, needed) in GPU_FIELDS.items() if needed and k not in entry]
        if not known and missing:
            raise BadInput(f"In the catalog file {origin}, line {line}: the GPU {entry['id']!r} "
                           f"is new, so it needs every field; missing {', '.join(missing)}. "
                           "(To change a shipped GPU, use its id from `thrifty gpus`.)")
        gpus[entry["id"]] = replace(known, **entry) if known else Gpu(**entry)
    for entry in parsed["price"]:
        entry.pop("_line")
        price = Price(**entry, origin=origin)
        prices[price.key()] = price


def parse(text: str, origin: str) -> dict[str, list[dict]]:
    """Checked entries of a catalog text; any error names the file and line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"The catalog file {origin} is not valid TOML: {exc}. Fix that line; each "
                       "entry is a [[gpu]] or [[price]] table of key = value lines.") from exc
    unknown = sorted(set(data) - {"gpu", "price"})
    if unknown:
        raise BadInput(f"The catalog file {origin} has {', '.join(unknown)} at the top level "
                       f"(line {_line_of(text, unknown[0])}); only [[gpu]] and [[price]] tables "
                       "belong there.")
    lines = text.splitlines()
    result = {}
    for table, fields in (("gpu", GPU_FIELDS), ("price", PRICE_FIELDS)):
        entries = data.get(table, [])
        if not isinstance(entries, list):
            raise BadInput(f"In {origin}, line {_line_of(text, table)}: write [[{table}]] (an "
                           f"array of tables), not [{table}].")
        starts = _table_lines(lines, table)
        result[table] = [_check(e, fields, table, origin, lines, starts[i] if i < len(starts)
                                else 0, origin == "thrifty/data/gpus.toml")
                         for i, e in enumerate(entries)]
    return result


def _check(entry: dict, fields: dict, table: str, origin: str, lines: list[str], start: int,
           shipped: bool) -> dict:
    def fail(key: str | None, problem: str):
        line = _key_line(lines, start, key) if key else start
        raise BadInput(f"In the catalog file {origin}, line {line} ([[{table}]] entry starting "
                       f"at line {start}): {problem}. Fix that line and run again.")

    for key, value in entry.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            fail(key, f"unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close
                                                    else f"; known fields: {', '.join(fields)}"))
        kind = fields[key][0]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            entry[key] = value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            fail(key, f"{key} should be {_type_name(kind)}, not {value!r}")
        if kind in (float, int) and value <= 0:
            fail(key, f"{key} must be positive, not {value}")
    # A user's [[gpu]] may name only the fields it overrides; a new GPU needs them all.
    required = [k for k, (_, needed) in fields.items() if needed]
    if table == "price" or shipped:
        missing = [k for k in required if k not in entry]
        if missing:
            fail(None, f"missing {', '.join(missing)}")
    elif "id" not in entry:
        fail(None, "missing id (the GPU's short name, e.g. \"h100-sxm\")")
    if table == "price":
        if entry["kind"] not in PRICE_KINDS:
            fail("kind", f"kind {entry['kind']!r} is not one of {', '.join(PRICE_KINDS)}")
        if entry["kind"] == "reserved" and not entry.get("term"):
            fail(None, "a reserved price needs its term (e.g. term = \"1 year\")")
        entry["gpu"] = normalise(entry["gpu"])
    else:
        entry["id"] = normalise(entry["id"])
    return {**entry, "_line": start}


def _type_name(kind: type) -> str:
    return {float: "a number", int: "a whole number", str: "a quoted string",
            list: "a list of strings", datetime.date: "a date like 2026-05-01"}[kind]


def _table_lines(lines: list[str], table: str) -> list[int]:
    header = re.compile(rf"^\s*\[\[\s*{table}\s*\]\]")
    return [n for n, line in enumerate(lines, 1) if header.match(line)]


def _key_line(lines: list[str], start: int, key: str) -> int:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for n in range(start, len(lines) + 1):
        if n > start and lines[n - 1].lstrip().startswith("["):
            break
        if pattern.match(lines[n - 1]):
            return n
    return start


def _line_of(text: str, word: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if word in line:
            return n
    return 1


def as_dict(gpu: Gpu) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime.date) else v)
            for k, v in asdict(gpu).items()}


def price_dict(price: Price) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime.date) else v)
            for k, v in asdict(price).items()}
