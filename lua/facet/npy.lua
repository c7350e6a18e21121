return {load=function() error("todo") end, save=function() error("todo") end}
