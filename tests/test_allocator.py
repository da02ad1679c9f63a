"""keep_freed_memory takes effect on glibc and is a clean no-op elsewhere."""
import platform

from spikeacc.allocator import keep_freed_memory


def test_keep_freed_memory_takes_effect_on_glibc():
    took_effect = keep_freed_memory()
    assert isinstance(took_effect, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert took_effect
