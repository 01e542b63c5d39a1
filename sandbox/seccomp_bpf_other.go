//go:build linux && cgo && !amd64

package sandbox

// No precompiled programs for this architecture (seccomp_bpf.go):
// libseccomp builds the filters at run time.
var enginePrecompiled, lightPrecompiled *precompiledFilter
