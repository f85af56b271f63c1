"""`dfp reproduce`: the paper's claims re-run, judged and written up as one report."""
