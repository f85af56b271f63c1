# One image for the API, the migrate job and the workers.
# CPU build:  docker build -t dfp .
# GPU build:  docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 -t dfp-gpu .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DFP_DATA_DIR=/data

RUN useradd --create-home --uid 1000 dfp && mkdir -p /data/datasets && chown -R dfp /data
WORKDIR /app

# torch first, from the index that matches the hardware (CPU or a CUDA build).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY dfp_engine ./dfp_engine
COPY dfp ./dfp
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
COPY examples ./examples
RUN grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt .

USER dfp
EXPOSE 8000
CMD ["dfp", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
