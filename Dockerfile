# facetorch serve in a container. NOT BUILT OR RUN HERE: the development machines reach no container
# registry, so this file is untested; see docs/service.md ("Deployment") for what it assumes.
#
#   docker build -t facetorch-serve .
#   docker run -p 8000:8000 -v $PWD/data:/data -v $PWD/keys.txt:/run/secrets/facetorch_keys:ro facetorch-serve
FROM python:3.11-slim

# OpenCV (headless) still needs GLib; nothing else of the system is used.
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The CPU build of torch first (a CUDA base image and the default wheel for a GPU host).
RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu
COPY setup.cfg pyproject.toml README.md ./
COPY facetorch ./facetorch
COPY configs ./configs
# [dlib]: dlib's face network, 5-point landmarks and CNN detector as .dat files (CC0), read by facetorch itself.
RUN pip install --no-cache-dir ".[dlib,postgres]"

# The gallery (SQLite) lives on a volume, or give --gallery postgresql://...; the key file comes in as a secret.
RUN useradd --create-home facetorch && mkdir /data && chown facetorch /data
USER facetorch
VOLUME /data
EXPOSE 8000
# Two cores per worker is a good start; OMP threads per worker = cores / workers.
ENV OMP_NUM_THREADS=2
CMD ["facetorch", "serve", "--host", "0.0.0.0", "--port", "8000", "--api_keys", "/run/secrets/facetorch_keys", \
     "--gallery", "/data/people.db", "--config", "configs/embedding_dlib.yaml", "--workers", "1"]
