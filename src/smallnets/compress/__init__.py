"""Shrink a trained model: structured pruning (physically smaller convolutions), unstructured
magnitude pruning, Deep Compression (k-means weight sharing + Huffman coding, Han et al. 2016) and
the compressed file format that holds the result."""
