"""Progress bars for long work (import, quantize, distill, export): rate and ETA on stderr."""
import sys

from tqdm import tqdm


def progress_bar(total=None, desc="", unit="it", disable=False, **kw):
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5, **kw)
