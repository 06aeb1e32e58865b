import torch as th

# One torch thread: with two, SB3-style training slows down 5-16x whenever another process keeps the second core busy.
th.set_num_threads(1)
