package testnet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
)

// MaxBlob bounds the size of a blob the HTTP handler serves, so that a
// mistyped request cannot keep a server busy for long.
const MaxBlob = 1 << 30

// blobSeed makes every blob of a given size the same bytes in every process.
var blobSeed = [32]byte{'s', 'l', 'i', 'r', 'p', '4', 'n', 'e', 't', 'n', 's', '-', 't', 'e', 's', 't'}

// Blob returns a reader of size deterministic pseudo-random bytes (random so
// that no layer can compress or deduplicate them).
func Blob(size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(blobSeed), size)
}

// BlobSHA256 returns the hex SHA-256 of Blob(size).
func BlobSHA256(size int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, Blob(size)); err != nil {
		panic(err) // Blob never fails
	}
	return hex.EncodeToString(h.Sum(nil))
}

// HTTPHandler serves:
//
//	GET  /blob?size=N  N bytes of Blob(N)
//	POST /sha256       the hex SHA-256 of the request body and "\n"
//	GET  /             "hello from the outer namespace\n"
func HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob", serveBlob)
	mux.HandleFunc("POST /sha256", serveSHA256)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello from the outer namespace\n")
	})
	return mux
}

func serveBlob(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil || size < 0 || size > MaxBlob {
		http.Error(w, fmt.Sprintf("size must be 0..%d", MaxBlob), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.Copy(w, Blob(size))
}

func serveSHA256(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r.Body, MaxBlob+1))
	if err != nil || n > MaxBlob {
		http.Error(w, fmt.Sprintf("read body after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s\n", hex.EncodeToString(h.Sum(nil)))
}

// ServeHTTP serves HTTPHandler on addr (TCP) and registers it with s.
func (s *Services) ServeHTTP(addr string) error {
	srv := &http.Server{Handler: HTTPHandler()}
	ln, err := listenTCP(addr)
	if err != nil {
		return err
	}
	s.add(srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(ln)
	}()
	return nil
}
