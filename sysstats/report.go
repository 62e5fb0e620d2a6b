package sysstats

// Highest-value sources.
const (
	// SourceKernel: the kernel's own high-water mark (memory.max_usage_in_bytes,
	// memory.peak, memory.swap.peak, or the memsw lower bound) was read and
	// folded into the running maximum.
	SourceKernel = "kernel"
	// SourceTracked: no kernel high-water mark exists (older kernels), so the
	// value is the running maximum of what this process observed.
	SourceTracked = "tracked"
)
