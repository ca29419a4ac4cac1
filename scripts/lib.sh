# Shell helpers shared by the scripts that build tools from the Go module proxy. Sourced, not
# run; the sourcing script defines die() first.

# The Go toolchain: $GO, else go on PATH, else the image's /usr/local/go.
find_go() {
  if [[ -n ${GO:-} ]]; then
    echo "$GO"
  elif command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    die "no Go toolchain found (set GO or put go on PATH)"
  fi
}
