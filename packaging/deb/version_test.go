package main

import (
	"os/exec"
	"testing"
)

func TestDebVersion(t *testing.T) {
	for _, tc := range []struct {
		describe string
		count    int
		want     string
		err      bool
	}{
		{describe: "v1.2.3", want: "1.2.3"},
		{describe: "1.2.3", want: "1.2.3"},
		{describe: "v1.2.3-4-gabc1234", want: "1.2.3+4.gabc1234"},
		{describe: "v1.2.3-4-gabc1234-dirty", want: "1.2.3+4.gabc1234.dirty"},
		{describe: "v1.2.3-dirty", want: "1.2.3+0.dirty"},
		{describe: "v0.9.0rc1-12-g0123abc", want: "0.9.0rc1+12.g0123abc"},
		{describe: "1a31f66", count: 412, want: "0.0.0+412.g1a31f66"},
		{describe: "1a31f66-dirty\n", count: 412, want: "0.0.0+412.g1a31f66.dirty"},
		{describe: "1234567", count: 9, want: "0.0.0+9.g1234567"},
		{describe: "1a31f66", count: 0, err: true},
		{describe: "release-1", err: true},
		{describe: "", err: true},
		{describe: "v1.2_3", err: true},
	} {
		got, err := DebVersion(tc.describe, tc.count)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("DebVersion(%q, %d) = %q, %v; want %q (error %v)", tc.describe, tc.count, got, err, tc.want, tc.err)
		}
	}
}

// TestDebVersionsSort: versions of later commits sort after earlier ones
// in dpkg's own order.
func TestDebVersionsSort(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Fatalf("dpkg is needed: %v", err)
	}
	order := [][2]any{ // describe, count; each after the one before
		{"abc1234", 10}, {"abc1235", 11}, {"abc1235-dirty", 11}, {"abc1236", 100},
		{"v0.1.0", 0}, {"v0.1.0-dirty", 0}, {"v0.1.0-1-gdef5678", 0}, {"v0.1.0-1-gdef5678-dirty", 0},
		{"v0.1.0-12-g0000000", 0}, {"v0.1.1", 0}, {"v0.2.0-3-g1111111", 0}, {"v1.0.0", 0},
	}
	var prev string
	for _, o := range order {
		v, err := DebVersion(o[0].(string), o[1].(int))
		if err != nil {
			t.Fatal(err)
		}
		if prev != "" {
			if err := exec.Command(dpkg, "--compare-versions", v, "gt", prev).Run(); err != nil {
				t.Errorf("%s (%s) does not sort after %s", v, o[0], prev)
			}
		}
		prev = v
	}
}
