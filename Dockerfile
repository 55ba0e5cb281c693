# Multi-stage build of the wasmbox image from source, for users who build
# inside Docker (docker build -t wasmbox .). The result is the same as the
# Containerfile's: a static wasmbox and the bundled functions on scratch.
#
# It needs the Docker Hub image rust:1-bookworm and network access for apt
# and crates.io. The project's CI cannot reach Docker Hub, so CI tests the
# Containerfile (prebuilt binary) and not this file.
FROM docker.io/library/rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools clang lld wasi-libc libclang-rt-14-dev-wasm32 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl wasm32-wasip1 wasm32-wasip2
WORKDIR /src
COPY . .
RUN ./functions/build.sh \
 && cargo build --release --locked --target x86_64-unknown-linux-musl -p wasmbox \
 && mkdir /out \
 && cp target/x86_64-unknown-linux-musl/release/wasmbox /out/ \
 && cp functions/*.wasm functions/hello.wat /out/

FROM scratch
COPY --from=build /out/wasmbox /usr/local/bin/wasmbox
COPY --from=build /out/*.wasm /out/hello.wat /functions/
USER 65532:65532
ENV WASMBOX_FUNCTIONS=/functions
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wasmbox"]
CMD ["serve"]
