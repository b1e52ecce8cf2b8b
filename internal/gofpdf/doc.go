// Package gofpdf is github.com/jung-kurt/gofpdf v1.16.2 (MIT license, see
// LICENSE), copied here so that errand can patch it: upstream is archived
// and takes no changes. Its API is upstream's; its documentation is
// upstream's (https://pkg.go.dev/github.com/jung-kurt/gofpdf@v1.16.2).
//
// PATCHES.md lists every change from upstream and why.
package gofpdf
