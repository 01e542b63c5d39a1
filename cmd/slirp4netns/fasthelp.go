//go:build cgo

package main

// fasthelp.c answers --help before the Go runtime starts; importing "C"
// links it in. Its header is generated from the Go definitions:
//go:generate go run ./internal/helpgen -o fasthelp.h

import "C"
