#!/usr/bin/env bash
# Runs each fuzz target of the module for FUZZTIME (make fuzz).
#
# Go up to 1.26 may end a duration-bounded fuzz run with a bare "context
# deadline exceeded" when the machine is so busy that a worker has not
# answered as the time runs out (go.dev/issue/75804, fixed in Go 1.27): a
# race in Go's fuzzing coordinator, with no failing input. Such a run is
# reported and tried once more; any other failure, and every failure that
# wrote a failing input, fails at once.
set -u
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}

fuzz() { # package target
	local out rc
	out=$("$GO" test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	if [ $rc -ne 0 ] && ! grep -q 'Failing input written to' <<<"$out" &&
		grep -qx '    context deadline exceeded' <<<"$out"; then
		return 75
	fi
	return $rc
}

for pkg in $("$GO" list ./...); do
	for target in $("$GO" test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "fuzz $pkg $target"
		fuzz "$pkg" "$target"
		rc=$?
		if [ $rc -eq 75 ]; then
			echo "fuzz $pkg $target: Go's fuzzing coordinator ran out of time with no failing input (go.dev/issue/75804); once more"
			fuzz "$pkg" "$target" || exit 1
		elif [ $rc -ne 0 ]; then
			exit 1
		fi
	done
done
