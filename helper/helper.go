// Package helper opens the TAP device inside the target's namespaces.
package helper

// Main is the helper process's entry point.
func Main() int { return 1 }
