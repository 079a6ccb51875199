# The relay in a small image. Build the page first (it needs the wasm
# toolchain, which this image does not carry), then the image:
#
#   cargo xtask web
#   docker build -t meshtalk-relay .
#   docker run -d -p 4001:4001 -p 4001:4001/udp -p 4002:4002 -p 4002:4002/udp \
#              -p 8080:8080 -v meshtalk:/var/lib/meshtalk meshtalk-relay \
#              --external-addr /dns4/chat.example.org/tcp/4001
#
# See README.md, "Running a relay".

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p meshtalk-relay \
 && strip target/release/meshtalk-relay

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/meshtalk --create-home meshtalk
COPY --from=build /src/target/release/meshtalk-relay /usr/local/bin/meshtalk-relay
COPY dist /usr/share/meshtalk/web
USER meshtalk
# Every flag has an environment variable; these suit a container.
ENV MESHTALK_DATA_DIR=/var/lib/meshtalk \
    MESHTALK_WEB_DIR=/usr/share/meshtalk/web \
    MESHTALK_HTTP=0.0.0.0:8080 \
    MESHTALK_LISTEN=/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/tcp/4002/ws,/ip4/0.0.0.0/udp/4002/webrtc-direct
VOLUME /var/lib/meshtalk
EXPOSE 4001/tcp 4001/udp 4002/tcp 4002/udp 8080/tcp
# GET /healthz without curl: bash's /dev/tcp. (With --tls-cert the HTTP
# side speaks HTTPS; check it from outside instead.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^ok' <&3"]
ENTRYPOINT ["meshtalk-relay"]
