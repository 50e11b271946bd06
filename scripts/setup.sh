#!/usr/bin/env bash
# Creates, once per user and torch version, the Python environment conveyor builds and tests
# against: the torch wheel (its libtorch is what tch links), cmake (sentencepiece-sys builds
# SentencePiece from source), and pyarrow + sentencepiece for the independent-reader and
# baseline checks (numpy for the span-corruption baseline), moto (an S3-compatible server on
# loopback for the remote-corpus tests), and the CUDA C-runtime and CCCL headers that the torch
# wheel leaves out but its ProcessGroupNCCL.hpp includes (model/build.rs compiles the NCCL
# bridge against them), maturin and pytest (the Python package in python/ and its tests), datasets (its benchmark),
# and transformers 4 and 5 (the Hugging Face parity tests).
# Reused by every clone: the torch wheel and its CUDA runtime are ~4.7 GB.
# Prints the environment's path on stdout.
set -euo pipefail
TORCH_VERSION=2.11.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/conveyor"
venv="${CONVEYOR_VENV:-$cache/torch-$TORCH_VERSION}"
packages=("torch==$TORCH_VERSION" "cmake==4.4.5" "pyarrow==26.0.1" "sentencepiece==0.2.1" "numpy==2.3.5" "safetensors==0.7.0" "matplotlib==3.10.7" "moto[server]==5.2.5" "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85" "transformers==4.57.6" "maturin==1.16.0" "pytest==8.4.2" "datasets==4.8.5" "huggingface-hub==0.36.2" "absl-py==2.3.1")
# transformers 5 (the current major version; it needs huggingface-hub 1, which transformers 4
# cannot import) for the Hugging Face parity tests, in a folder of its own that those tests put
# first on PYTHONPATH: conveyor reads and writes the configs of both. Its other needs are in
# the environment already (but typer, for its command-line tool only); protobuf is what its
# T5Tokenizer needs to convert spiece.model.
hf5_dir="$venv/transformers5"
hf5=("transformers==5.17.0" "huggingface-hub==1.33.0" "tokenizers==0.23.2" "safetensors==0.8.0" "protobuf==7.36.2")
# T5's own package (no dependencies: only its qa_utils.py is loaded, whose needs are absl-py and
# numpy above), in a folder of its own: the reference the SQuAD metric is tested against.
t5_dir="$venv/t5-reference"
t5=("t5==0.9.4")
stamp="$venv/.conveyor-ready-$(printf '%s\n' "${packages[@]}" "${hf5[@]}" "${t5[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (torch $TORCH_VERSION, cmake, pyarrow, sentencepiece; first time only)" >&2
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
      --target "$hf5_dir" "${hf5[@]}" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
      --target "$t5_dir" "${t5[@]}" >&2
  touch "$stamp"
fi
echo "$venv"
