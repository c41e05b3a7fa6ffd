# Generates kernels_all.cpp: every kernels/Cuda/Source/*.cu prepped for the emulator (one namespace each) plus a
# dispatch table name -> launcher that unpacks cuLaunchKernel's void** arguments by the kernel's parameter types, with
# the size of each argument (a captured launch keeps a copy of its argument values, as a CUDA graph's kernel node does).
import sys, re, os, glob, subprocess
here = os.path.dirname(os.path.abspath(__file__))
cuda = os.path.join(here, "..", "..", "..", "kernels", "Cuda", "Source")
out = sys.argv[1]
parts = ['#include "emu.h"', '#include <string>', '#include <map>', '#include "fake_kernels.h"']
table = []
for path in sorted(glob.glob(os.path.join(cuda, "*.cu"))):
    name = os.path.basename(path)
    ns = "k_" + re.sub(r"\W", "_", name[:-3])
    tmp = os.path.join(os.path.dirname(out), ns + ".cpp")
    subprocess.check_call([sys.executable, os.path.join(here, "..", "prep.py"), name, tmp])
    src = open(tmp).read().replace('#include "emu.h"\n', "")
    parts.append(f"namespace {ns} {{\n{src}\n}}")
    text = open(path).read()
    for m in re.finditer(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(([^)]*)\)', text):
        kname, params = m.group(1), m.group(2)
        args, sizes = [], []
        for i, p in enumerate([x.strip() for x in params.replace("\n", " ").split(",")]):
            ty = re.sub(r"\s*\b\w+$", "", p).strip()
            ty = re.sub(r"\b(u16|u32|u64)\b", ns + r"::\1", ty)
            args.append(f"*({ty}*)a[{i}]")
            sizes.append(f"sizeof({ty})")
        table.append(f'    {{"{kname}", {{ [](void** a) {{ {ns}::{kname}({", ".join(args)}); }}, {{ {", ".join(sizes)} }} }}}},')
parts.append("std::map<std::string, EmuKernel>& emu_kernels() {\n  static std::map<std::string, EmuKernel> t = {\n" + "\n".join(table) + "\n  };\n  return t;\n}")
open(out, "w").write("\n".join(parts))
