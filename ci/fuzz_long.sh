#!/usr/bin/env bash
# The long fuzz run: 1,000,000 executions per target (hours on 2 cores; not in CI).
exec "$(dirname "$0")/fuzz.sh" "${1:-1000000}"
