//go:build integration

package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/ehrport/ehrport/storage"
)

// SampleObject reads the same head and size whichever request the listed
// size makes it pick, and whatever size the listing claimed: a stale listing
// (an object that grew or shrank since) costs a request, never correctness.
func TestIntegrationSampleListedSize(t *testing.T) {
	cfg := testbedConfig(t)
	for _, cloud := range []string{"clouda", "cloudb"} {
		t.Run(cloud, func(t *testing.T) {
			ctx := context.Background()
			bucket := bucketFor(t, cfg, cloud)
			st, err := storage.OpenRef(cfg, cloud+":"+bucket+"/sample-"+randomHex(4))
			if err != nil {
				t.Fatal(err)
			}
			s3 := st.(*storage.S3Store)
			const n = 4096
			for _, size := range []int{0, 10, n, 20000, storage.WholeSampleMax, storage.WholeSampleMax + 1, 3 * storage.WholeSampleMax} {
				body := make([]byte, size)
				rand.Read(body)
				key := fmt.Sprintf("obj-%d", size)
				if err := st.Put(ctx, key, bytes.NewReader(body), int64(size), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				want := body[:min(size, n)]
				// Right, unknown, too small and too large listed sizes.
				for _, listed := range []int64{int64(size), -1, 0, 2 * storage.WholeSampleMax} {
					// Three times, so a connection left unusable by one
					// sample would show on the next.
					for range 3 {
						smp, err := s3.SampleObject(ctx, key, "", n, listed)
						if err != nil {
							t.Fatalf("size %d, listed %d: %v", size, listed, err)
						}
						if !bytes.Equal(smp.Head, want) || smp.Info.Size != int64(size) {
							t.Fatalf("size %d, listed %d: head %d bytes (equal %v), size %d", size, listed, len(smp.Head), bytes.Equal(smp.Head, want), smp.Info.Size)
						}
					}
				}
				if err := st.Delete(ctx, key); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
