"""The Text/ captions of a dataset in one place: formats, reading, writing, the colour filter.

Module map: `files` (file names, contents, writing), `reading` (parsing and matching the
files to images, for the layout readers), `colour_filter` (removing colour words from IR
rephrases), `atomic_files` (writes a killed run never leaves half-done). Used by the layout
readers (and so the TFDS builders), the synthetic trees and the captioning/rephrasing CLI.
"""
