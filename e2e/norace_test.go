//go:build !race

package e2e

// raceEnabled is true when the test binary was built with -race; the
// harness then builds the daemons with -race too.
const raceEnabled = false
