package cli

import "testing"

func TestSparkline(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want string
	}{
		{nil, "-"},
		{[]float64{5, 5, 5}, "▁▁▁"},
		{[]float64{0, 7}, "▁█"},
		{[]float64{0, 1, 2, 3, 4, 5, 6, 7}, "▁▂▃▄▅▆▇█"},
	} {
		if got := Sparkline(tt.in); got != tt.want {
			t.Errorf("Sparkline(%v) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KB", 1536 << 20: "1.5 GB"} {
		if got := bytes(n); got != want {
			t.Errorf("bytes(%d) = %q; want %q", n, got, want)
		}
	}
}
