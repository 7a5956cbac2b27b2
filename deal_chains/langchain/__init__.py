"""LangChain integration: ``ChatDeAL`` (chat model), ``DeALLLM`` (LLM), reward variables
from a chain's input, tool calling under a grammar mask, aligned agent tools.

>>> from deal_chains.langchain import ChatDeAL                       # doctest: +SKIP
>>> ChatDeAL(spec="commongen", reward_vars={"concepts": ["dog", "ball"]}).invoke(
...     "Write a sentence about a dog and a ball.").content           # doctest: +SKIP

Every module here is a thin shell over ``deal_chains.runtime``, the one place that runs
``DeALEngine``.
"""

from deal_chains.langchain.agents import aligned_tool, guard_final_answer
from deal_chains.langchain.chains import with_reward_vars
from deal_chains.langchain.chat_models import ChatDeAL
from deal_chains.langchain.llms import DeALLLM
from deal_chains.runtime.tool_calling import ToolSet

__all__ = ["ChatDeAL", "DeALLLM", "ToolSet", "aligned_tool", "guard_final_answer", "with_reward_vars"]
