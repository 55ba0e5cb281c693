;; hello: writes "Hello from wasmbox!\n" to stdout with WASI fd_write.
;; Hand-written text format, so the server always has a function to serve
;; even on a machine without a wasm toolchain.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: { buf = 16, len = 20 }
  (data (i32.const 0) "\10\00\00\00\14\00\00\00")
  (data (i32.const 16) "Hello from wasmbox!\n")
  (func (export "_start")
    (drop (call $fd_write
      (i32.const 1)    ;; stdout
      (i32.const 0)    ;; iovs
      (i32.const 1)    ;; iovs_len
      (i32.const 8)))) ;; where to store bytes written
)
