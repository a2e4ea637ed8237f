# nemobot: the chat bot, with Debian's FFmpeg (and fonts for titles, Latin and Chinese) for localnemo.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg fonts-dejavu-core fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 nemobot \
    && mkdir /data /shared && chown nemobot:nemobot /data /shared

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY storage ./storage
COPY localnemo ./localnemo
COPY nemobot ./nemobot
RUN pip install --no-cache-dir .

USER nemobot
ENV NEMOBOT_DB=/data/nemobot.sqlite3 \
    NEMOBOT_TEMP_DIR=/tmp \
    PYTHONUNBUFFERED=1
# /shared: the media folder localnemo and its render workers share (docker-compose.yml).
VOLUME ["/data"]
ENTRYPOINT ["nemobot"]
CMD ["run"]
