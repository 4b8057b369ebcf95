"""Task scripts and flows, pure: the signals `perform()` may return (`signals`), the Task base
class and registry (`script`), and what a returned value means for a flow (`outcome`:
`interpret`, and the pure step function `decide`)."""
