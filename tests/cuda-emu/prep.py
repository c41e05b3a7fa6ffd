# Rewrites one kernels/Cuda/Source/*.cu (with common.cuh inlined) into C++ for the CPU emulator in emu.h:
# extern "C" dropped, dynamic shared memory mapped to a static buffer, mma.sync replaced by emu_mma.
import sys, re, os
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "Cuda", "Source") + "/"
common = open(d + "common.cuh").read().replace("#pragma once", "")
src = open(d + sys.argv[1]).read().replace('#include "common.cuh"', common)
src = src.replace('extern "C" ', '')
src = re.sub(r'extern __shared__ (?:__align__\(16\) )?(\w+ ?\w*) (\w+)\[\];', r'\1* \2 = (\1*)g_dynsmem;', src)
src = re.sub(r'#if defined\(__CUDA_ARCH__\) && __CUDA_ARCH__ >= 800\n    asm volatile.*?#else\n    __trap\(\);\n#endif',
             'emu_mma(d, a0, a1, a2, a3, b0, b1);', src, flags=re.S)
open(sys.argv[2], "w").write('#include "emu.h"\n' + src)
