"""Make PyPI's CUDA build of torch a CPU-only install: replace the CUDA libraries it links against by stubs.

PyPI's torch 2.14.1 for Linux is a CUDA build (no CPU-only 2.14.1 wheel is on PyPI): ``libtorch_cpu.so``,
``libtorch_cuda.so`` and ``torch/_C`` name libcudart, cuBLAS, cuDNN, NCCL, ... as DT_NEEDED, so ``import torch``
fails without the ``nvidia-*`` wheels (3.2 GB). On a machine without a GPU none of their functions is ever called:
torch asks libcudart for the device count, gets 0, and never goes further. This script, run in the serving image's
build stage, writes one small stub library per CUDA soname that torch needs, into ``torch/lib`` (which is on
torch's RUNPATH as ``$ORIGIN``), exporting the symbols torch imports from the real library, with their symbol versions:
functions return 0 (success, with out-parameters left as the caller initialised them: a device count of 0),
data symbols are zero-filled. The real CUDA wheels can then be uninstalled.

    python cuda_stubs.py SITE_PACKAGES          # prints the sonames it stubbed

Needs binutils (``readelf``, ``as``, ``ld``), in the build stage only.
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# readelf -W --dyn-syms: "Num: Value Size Type Bind Vis Ndx Name"
_SYMBOL = re.compile(r"^\s*\d+:\s+[0-9a-f]+\s+(\d+|0x[0-9a-f]+)\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S+)")
_RETURN_ZERO = "\txorl %eax, %eax\n\tret\n"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install binutils")
    return path


def _readelf(*args: str) -> str:
    return subprocess.run([_tool("readelf"), "-W", *args], check=True, capture_output=True, text=True).stdout


def _dynamic(path: Path, tag: str) -> list[str]:
    """Values of one dynamic-section tag (NEEDED, SONAME) of an ELF file."""
    return re.findall(rf"\({tag}\)[^\[]*\[([^\]]+)\]", _readelf("-d", str(path)))


def _is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _libraries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.so*") if p.is_file() and not p.is_symlink() and _is_elf(p))


def _symbols(path: Path) -> tuple[set[tuple[str, str]], list[tuple[str, str, int, str]]]:
    """What ``path`` imports, as (name, version or ''), and what it exports, as (name, version or '', size, type);
    a symbol exported under a hidden older version (name@VER) is left out of the exports."""
    imported, exported = set(), []
    for line in _readelf("--dyn-syms", str(path)).splitlines():
        match = _SYMBOL.match(line)
        if not match:
            continue
        size, kind, bind, ndx, full = match.groups()
        if ndx == "UND":
            name, _, version = full.partition("@")
            imported.add((name, version))
        elif bind in {"GLOBAL", "WEAK"} and ndx != "ABS":  # ABS: the symbols naming version definitions
            name, _, version = full.partition("@@")
            if "@" not in name:
                exported.append((name, version, int(size, 0), kind))
    return imported, exported


def _stub_source(symbols: list[tuple[str, str, int, str]]) -> tuple[str, str]:
    """Assembly and version script of a library exporting ``symbols``: functions return 0, data is zeros."""
    asm: list[str] = []
    nodes: dict[str, list[str]] = {}
    for name, version, size, kind in symbols:
        label, length = f'"{name}"', max(size, 1)
        if version:
            nodes.setdefault(version, []).append(label)
        if kind == "TLS":
            asm += ['\t.section .tbss,"awT",@nobits', f"\t.type {label}, @tls_object"]
        elif kind == "OBJECT":
            asm += ["\t.bss", f"\t.type {label}, @object"]
        else:  # FUNC, IFUNC (resolved to a plain function here), NOTYPE
            asm += ["\t.text", f"\t.globl {label}", f"\t.type {label}, @function", f"{label}:", _RETURN_ZERO]
            continue
        asm += [f"\t.globl {label}", f"\t.size {label}, {length}", f"{label}:", f"\t.zero {length}"]
    script = "".join(f"{version} {{ global: {'; '.join(labels)}; }};\n" for version, labels in nodes.items())
    return "\n".join(asm) + '\n\t.section .note.GNU-stack,"",@progbits\n', script


def stub(site_packages: Path) -> list[str]:
    """Write stubs into torch/lib for every soname torch needs that a CUDA wheel (nvidia/, cuda*) provides."""
    torch_lib = site_packages / "torch" / "lib"
    providers: dict[str, Path] = {}
    for folder in [site_packages / "nvidia", *site_packages.glob("cuda*")]:
        if folder.is_dir():
            for library in _libraries(folder):
                for soname in _dynamic(library, "SONAME"):
                    providers.setdefault(soname, library)
    libraries = _libraries(site_packages / "torch")
    consumers = [_symbols(library) for library in libraries]
    needed = {soname for library in libraries for soname in _dynamic(library, "NEEDED")}
    imported = {symbol for symbols, _ in consumers for symbol in symbols}
    # Unversioned names torch defines itself, or C++ (_Z...) ones: some CUDA libraries also export copies of std::
    # templates, and a stub of those would take the place of the real code for every library in the process.
    own = {name for _, symbols in consumers for name, version, _, _ in symbols if not version}
    stubbed = sorted(needed & providers.keys())
    with tempfile.TemporaryDirectory() as tmp:
        source, script, obj = Path(tmp, "stub.s"), Path(tmp, "stub.map"), Path(tmp, "stub.o")
        for soname in stubbed:
            exported = _symbols(providers[soname])[1]
            asm, versions = _stub_source(
                [s for s in exported if s[:2] in imported and (s[1] or not (s[0] in own or s[0].startswith("_Z")))]
            )
            source.write_text(asm)
            script.write_text(versions)
            subprocess.run([_tool("as"), "-o", str(obj), str(source)], check=True)
            link = [_tool("ld"), "-shared", "-soname", soname, "-o", str(torch_lib / soname), str(obj)]
            subprocess.run([*link, f"--version-script={script}"] if versions else link, check=True)
    return stubbed


if __name__ == "__main__":
    print("\n".join(stub(Path(sys.argv[1]))))
