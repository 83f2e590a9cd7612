FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY comms ./comms
COPY consumers ./consumers
COPY templates ./templates
COPY campaigns.yaml ./
RUN pip install --no-cache-dir .
CMD ["comms", "run"]
