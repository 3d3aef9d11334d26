# Sourced by the gpu_*.sh scripts: unpack BUNDLE ($1, default .gpu) into /tmp/xt, set $out
# ($OUT, default /tmp/xt-out), $py ($PYTHON, default python3) and the environment, and print
# the GPU.
bundle="${1:-.gpu}"
out="${OUT:-/tmp/xt-out}"
mkdir -p "$out"
export PYTHONPATH="$PWD/python" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 TOKENIZERS_PARALLELISM=false
py="${PYTHON:-python3}"
"$py" benches/gpu_unpack.py "$bundle" /tmp/xt || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
