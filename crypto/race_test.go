//go:build race

package crypto_test

// Under the race detector the round trips stop at a few segments: the
// 257-segment ones take minutes there, and crypto/internal/stream covers
// 260 segments of a small size under it.
const raceEnabled = true
