//go:build cgo

package main

// arena.c limits glibc's malloc to one arena before the Go runtime starts.

/*
int slirp4netns_malloc_arenas(void);
*/
import "C"

// mallocArenas returns how many arenas glibc's malloc has, or -1 if it
// cannot tell.
func mallocArenas() int { return int(C.slirp4netns_malloc_arenas()) }
