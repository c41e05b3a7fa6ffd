# Rewrites kernels/Cuda/Source/*.cu files (prep.py a.cu [b.cu ...] out.cpp; common.cuh inlined once) into C++ for the CPU emulator in emu.h:
# extern "C" dropped, dynamic shared memory mapped to a static buffer, the section of PTX helpers (mma.sync,
# ldmatrix, cp.async) dropped in favour of emu.h's emulation.
import sys, re, os
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "Cuda", "Source") + "/"
common = open(d + "common.cuh").read().replace("#pragma once", "")
src = "\n".join(open(d + f).read().replace('#include "common.cuh"', common if i == 0 else "") for i, f in enumerate(sys.argv[1:-1]))
src = src.replace('extern "C" ', '')
src = re.sub(r'extern __shared__ (?:__align__\(16\) )?(\w+ ?\w*) (\w+)\[\];', r'\1* \2 = (\1*)g_dynsmem;', src)
# the PTX helpers (inline asm) of a file are replaced by emu.h's emulation of the same functions
src = re.sub(r'// ---- PTX helpers.*?// ---- end of PTX helpers ----\n', '', src, flags=re.S)
open(sys.argv[-1], "w").write('#include "emu.h"\n' + src)
