//go:build race

package main

// raceBuild: the race detector multiplies memory and time, so peak-memory
// limits are not checked and the 100 MB cases are left to the normal run.
const raceBuild = true
